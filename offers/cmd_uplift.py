"""``offers train uplift`` and ``offers evaluate uplift``.

``train uplift --data DIR`` builds the training set from the campaigns in DIR, fits the chosen
learner per outcome on the time-based training split, logs the run to MLflow, registers
``offers-uplift`` as challenger and runs the champion gate (Qini on the stored test split).
``evaluate uplift --data DIR`` does the same fit and scoring without MLflow (``--json`` for a
machine-readable report). Progress goes to stderr.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from offers.cli import check_memory_limit, evaluate_group, train_group
from offers.registry_cli import (
    PolicyGateOpt,
    TrackingUriOpt,
    fail,
    gate_verdict,
    policy_line,
    quiet_mlflow,
    use_policy_gate,
)

console = Console(stderr=True)
out = Console()


class Learner(StrEnum):
    S = "S"
    T = "T"
    X = "X"
    CT = "CT"


class Grain(StrEnum):
    kind = "kind"
    offer = "offer"
    auto = "auto"


class Outcome(StrEnum):
    conversion = "conversion"
    spend = "spend"


DataOpt = Annotated[Path, typer.Option("--data", help="canonical data directory (campaigns)")]
LearnerOpt = Annotated[Learner, typer.Option(help="meta-learner (CT: conversion only)")]
BaseOpt = Annotated[str, typer.Option(help="gradient boosting: lightgbm or hgb")]
ParamsOpt = Annotated[
    str | None,
    typer.Option(help='JSON object overriding base learner settings, e.g. {"n_estimators": 50}'),
]
GrainOpt = Annotated[
    Grain,
    typer.Option(
        "--treatment",
        help="one effect per offer kind or offer; auto: per offer when the median offer has "
        "at least 300 logged sends",
    ),
]
OutcomesOpt = Annotated[
    str, typer.Option(help="comma-separated outcomes to model: conversion, spend")
]
GateOpt = Annotated[Outcome, typer.Option(help="outcome whose test Qini gates promotion")]
WindowOpt = Annotated[float, typer.Option(min=0.001, help="outcome window after a send (days)")]
LevelWindowOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="the spend level (mean effect per offer) is measured over this window after a "
        "send, net of the purchases a send pulls forward (days, e.g. 44; 0: over --window-days)",
    ),
]
LevelByCampaignOpt = Annotated[
    bool,
    typer.Option(
        help="measure each offer's level campaign by campaign against that campaign's control "
        "rows, with the between-campaign variance in its standard error (docs/engine.md)",
    ),
]
ShareOpt = Annotated[float, typer.Option(help="share of rows (latest campaigns) held out")]
SplitOpt = Annotated[str | None, typer.Option(help="test split start (default: by --test-share)")]
PropOpt = Annotated[bool, typer.Option(help="weight rows by 1 / logged propensity")]
CalibOpt = Annotated[
    bool, typer.Option(help="shift each treatment's effects to the regression-adjusted ATT")
]
SeedOpt = Annotated[int, typer.Option(help="seed of the base learners")]
EngineOpt = Annotated[
    str, typer.Option(help="where the training set is built: duckdb or spark (local[*])")
]
MemoryOpt = Annotated[
    str | None,
    typer.Option(
        help="memory limit of the training-set queries, e.g. 4GB (DuckDB spills)",
        callback=check_memory_limit,
    ),
]


def _check_engine(engine: str) -> None:
    from features.pipeline.engines import ENGINES

    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")


def _settings(
    learner: Learner,
    base_learner: str,
    base_params: str | None,
    treatment: Grain,
    outcomes: str,
    gate_outcome: Outcome,
    window_days: float,
    test_share: float,
    split_at: str | None,
    propensity: bool,
    calibrate: bool,
    seed: int,
    level_window_days: float = 0.0,
    level_by_campaign: bool = False,
) -> Any:
    from training.uplift.fit import UpliftTrainSettings

    try:
        params = json.loads(base_params) if base_params else None
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"--base-params must be a JSON object; got {base_params!r}")
        return UpliftTrainSettings(
            learner=learner.value,
            base_learner=base_learner,
            base_params=params,
            outcomes=tuple(o.strip() for o in outcomes.split(",") if o.strip()),
            gate_outcome=gate_outcome.value,
            treatment=treatment.value,
            window_days=window_days,
            test_share=test_share,
            split_at=split_at,
            use_propensity=propensity,
            calibrate_level=calibrate,
            seed=seed,
            level_window_days=level_window_days or None,
            level_by_campaign=level_by_campaign,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _metrics_table(title: str, metrics: dict[str, float], treatments: list[str]) -> Table:
    """Rows: treatments (and ``all``); columns: test metrics and, if known, truth metrics."""
    outcomes = sorted({k.split(".")[1] for k in metrics if k.startswith("qini.") and "." in k[5:]})
    cols = [
        (f"{m} {o}", f"{m}.{o}")
        for o in outcomes
        for m in ("qini", "uplift@30", "mean_effect", "truth_corr", "ate_error")
        if any(k.startswith(f"{m}.{o}.") for k in metrics)
    ]
    t = Table(title=title)
    t.add_column("treatment")
    for label, _ in cols:
        t.add_column(label, justify="right")
    for name in [*treatments, "all"]:
        cells = []
        for _, key in cols:
            value = metrics.get(f"{key}.{name}")
            if value is None and name == "all" and key.startswith("qini."):
                value = metrics.get(key)
            cells.append("-" if value is None or math.isnan(value) else f"{value:.4f}")
        t.add_row(name, *cells)
    return t


def _run(step: str) -> None:
    console.log(step)


def train_uplift_command(
    data: DataOpt,
    learner: LearnerOpt = Learner.S,
    base_learner: BaseOpt = "lightgbm",
    base_params: ParamsOpt = None,
    treatment: GrainOpt = Grain.auto,
    outcomes: OutcomesOpt = "conversion,spend",
    gate_outcome: GateOpt = Outcome.conversion,
    window_days: WindowOpt = 14.0,
    level_window_days: LevelWindowOpt = 0.0,
    level_by_campaign: LevelByCampaignOpt = False,
    test_share: ShareOpt = 0.2,
    split_at: SplitOpt = None,
    propensity: PropOpt = False,
    calibrate: CalibOpt = True,
    seed: SeedOpt = 0,
    model_name: Annotated[str, typer.Option(help="registered model name")] = "offers-uplift",
    tracking_uri: TrackingUriOpt = None,
    policy_gate: PolicyGateOpt = True,
    engine: EngineOpt = "duckdb",
    memory_limit: MemoryOpt = None,
) -> None:
    """Train the uplift model on DIR's campaigns, register it as challenger, gate vs champion
    (its Qini and, with --policy-gate, the off-policy value of the decisions it leads to)."""
    quiet_mlflow()
    from training.registry import ModelRegistry
    from training.uplift.data import UpliftDataError
    from training.uplift.train import UpliftTrainError, train_uplift

    settings = _settings(
        learner, base_learner, base_params, treatment, outcomes, gate_outcome,
        window_days, test_share, split_at, propensity, calibrate, seed, level_window_days,
        level_by_campaign,
    )  # fmt: skip
    _check_engine(engine)
    if not data.is_dir():
        fail(f"--data {data}: not a directory")
    registry = ModelRegistry(tracking_uri)
    use_policy_gate(registry, data, policy_gate)
    try:
        with console.status("training uplift model"):
            result = train_uplift(
                data, settings, registry, name=model_name, progress=_run, engine=engine,
                memory_limit=memory_limit,
            )  # fmt: skip
    except (UpliftDataError, UpliftTrainError, ValueError) as exc:
        fail(str(exc))
    treatments = result.fitted.treatments
    out.print(
        _metrics_table(f"{model_name} v{result.version}: test split", result.metrics, treatments)
    )
    decision = result.decision
    if decision.champion_value is not None:
        out.print(
            f"gate qini ({settings.gate_outcome}): new {decision.challenger_value:.4f} vs "
            f"champion v{decision.champion_version} {decision.champion_value:.4f}"
        )
    if (line := policy_line(decision)) is not None:
        out.print(line)
    out.print(gate_verdict(result.version, decision))
    out.print(f"tracking: {registry.tracking_uri}")


def evaluate_uplift_command(
    data: DataOpt,
    learner: LearnerOpt = Learner.S,
    base_learner: BaseOpt = "lightgbm",
    base_params: ParamsOpt = None,
    treatment: GrainOpt = Grain.auto,
    outcomes: OutcomesOpt = "conversion,spend",
    gate_outcome: GateOpt = Outcome.conversion,
    window_days: WindowOpt = 14.0,
    level_window_days: LevelWindowOpt = 0.0,
    level_by_campaign: LevelByCampaignOpt = False,
    test_share: ShareOpt = 0.2,
    split_at: SplitOpt = None,
    propensity: PropOpt = False,
    calibrate: CalibOpt = True,
    seed: SeedOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
    engine: EngineOpt = "duckdb",
    memory_limit: MemoryOpt = None,
) -> None:
    """Fit on the time-based training split and score the test split (no MLflow)."""
    from training.uplift.data import UpliftDataError
    from training.uplift.fit import UpliftTrainError
    from training.uplift.train import evaluate_uplift

    settings = _settings(
        learner, base_learner, base_params, treatment, outcomes, gate_outcome,
        window_days, test_share, split_at, propensity, calibrate, seed, level_window_days,
        level_by_campaign,
    )  # fmt: skip
    _check_engine(engine)
    if not data.is_dir():
        fail(f"--data {data}: not a directory")
    try:
        with console.status("evaluating uplift model"):
            ev = evaluate_uplift(
                data, settings, progress=_run, engine=engine, memory_limit=memory_limit
            )
    except (UpliftDataError, UpliftTrainError, ValueError) as exc:
        fail(str(exc))
    settings, fitted, metrics = ev.settings, ev.fitted, ev.metrics
    if as_json:
        report = {
            "data": str(data),
            "settings": {k: v for k, v in vars(settings).items()},
            "treatments": fitted.treatments,
            "test_start": str(fitted.test_start),
            "metrics": metrics,
        }
        typer.echo(json.dumps(report, default=str))
        return
    out.print(_metrics_table(f"{data.name}: test split", metrics, fitted.treatments))


def register(app: typer.Typer) -> None:
    """Add ``train uplift`` and ``evaluate uplift`` to the shared ``train``/``evaluate`` groups."""
    train_group(app).command("uplift")(train_uplift_command)
    evaluate_group(app).command("uplift")(evaluate_uplift_command)
