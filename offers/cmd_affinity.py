"""``offers evaluate affinity``, ``offers train affinity`` and ``offers promote``.

``evaluate affinity --data DIR --json`` prints one JSON object (dataset, split, shipped model,
metrics per model, ratios, calibration); progress goes to stderr so stdout stays clean.
``train affinity`` evaluates, logs and registers the shipped model in MLflow and runs the
champion gate; ``promote NAME --version V`` forces a version to champion (rolling back is
promoting an earlier version, or ``--rollback``).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from offers.cli import (
    CalibrationPairs,
    CalPairsOpt,
    CompareBpr,
    CompareBprOpt,
    check_memory_limit,
    evaluate_group,
    train_group,
)
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

TARGET_HELP = "positives: offers (redemptions), products or categories (purchases)"

DataOpt = Annotated[Path, typer.Option("--data", help="canonical data directory")]
TargetOpt = Annotated[str, typer.Option(help=TARGET_HELP)]
CandidatesOpt = Annotated[
    str, typer.Option(help="offers target: held (offers the member held) or all offers")
]
SplitOpt = Annotated[
    datetime | None, typer.Option(help="T, start of the test window (default: last 20% of time)")
]
DaysOpt = Annotated[float | None, typer.Option(help="length of the window in days")]
TrialsOpt = Annotated[int, typer.Option(min=1, help="configurations tried on validation")]
SeedOpt = Annotated[int, typer.Option(help="seed of the search and the models")]
ThreadsOpt = Annotated[int, typer.Option(min=0, help="implicit threads (0 = all cores)")]
NameOpt = Annotated[str | None, typer.Option("--name", help="data set name in the report")]
MinCandOpt = Annotated[int, typer.Option(min=1, help="held offers a member needs to count")]


def _settings(
    target: str,
    candidates: str,
    split: datetime | None,
    test_days: float | None,
    valid_days: float | None,
    min_candidates: int,
    als_trials: int,
    bpr_trials: int,
    seed: int,
    threads: int,
    compare_bpr: CompareBpr = CompareBpr.auto,
    calibration_pairs: CalibrationPairs = CalibrationPairs.held,
) -> tuple[Any, Any]:
    from training.affinity.evaluate import EvalSettings
    from training.affinity.search import SearchSettings

    try:
        ev = EvalSettings(
            target=target,
            candidates=candidates,
            split=split,
            test_days=test_days,
            valid_days=valid_days,
            min_candidates=min_candidates,
            calibration_pairs=CalibrationPairs(calibration_pairs).value,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    search = SearchSettings(
        als_trials=als_trials,
        bpr_trials=bpr_trials,
        seed=seed,
        num_threads=threads,
        compare_bpr=CompareBpr(compare_bpr).value,
    )
    return ev, search


class _Bars:
    """Rich progress bars fed by the library's ``progress(stage, done, total)`` callback."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bars:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


_ROWS = (
    "recall@1",
    "recall@3",
    "recall@5",
    "recall@10",
    "ndcg@10",
    "map@10",
    "precision@10",
    "catalog_coverage@10",
    "share_personalised",
    "share_segment_popular",
    "share_global_popular",
)
_SHORT = {
    "segment_popularity": "segment",
    "personal_popularity": "buy-again",
    "popularity": "popular",
}


def _metrics_table(report: dict[str, Any]) -> Table:
    """Metrics as rows, models as columns (the shipped one in bold)."""
    t = Table(
        title=f"{report['dataset']}: {report['target']} ({report['candidates']}), test window"
    )
    t.add_column("metric")
    names = list(report["models"])
    for name in names:
        label = _SHORT.get(name, name)
        t.add_column(f"[bold]{label}*[/]" if name == report["shipped"] else label, justify="right")
    for row in _ROWS:
        t.add_row(row, *(f"{report['models'][n].get(row, float('nan')):.3f}" for n in names))
    t.caption = f"* shipped; test members {report['split']['test']['members']:,}"
    return t


EngineOpt = Annotated[
    str, typer.Option(help="where the inputs are aggregated: duckdb or spark (local[*])")
]
MemoryOpt = Annotated[
    str | None,
    typer.Option(
        help="memory limit of the input queries, e.g. 4GB (DuckDB spills past it)",
        callback=check_memory_limit,
    ),
]


def _load(data: Path, engine: str = "duckdb", memory_limit: str | None = None) -> Any:
    """``data`` opened for affinity training: transactions stay in DuckDB (or Spark)."""
    from features.pipeline import FeatureInputError
    from features.pipeline.engines import ENGINES
    from training.affinity.data import open_affinity_tables

    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if not data.is_dir():
        fail(f"--data {data}: not a directory")
    try:
        return open_affinity_tables(data, engine, memory_limit)
    except (FeatureInputError, ValueError) as exc:
        fail(f"{data}: {exc}; run `offers validate {data}`")
    raise AssertionError  # unreachable


def evaluate_affinity_command(
    data: DataOpt,
    target: TargetOpt = "offers",
    candidates: CandidatesOpt = "held",
    split: SplitOpt = None,
    test_days: DaysOpt = None,
    valid_days: DaysOpt = None,
    min_candidates: MinCandOpt = 2,
    calibration_pairs: CalPairsOpt = CalibrationPairs.held,
    als_trials: TrialsOpt = 6,
    bpr_trials: TrialsOpt = 3,
    compare_bpr: CompareBprOpt = CompareBpr.auto,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    name: NameOpt = None,
    plots: Annotated[Path | None, typer.Option(help="write metric@k and reliability PNGs")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    engine: EngineOpt = "duckdb",
    memory_limit: MemoryOpt = None,
) -> None:
    """Chronological offline evaluation of ALS, BPR, the baselines and the shipped blend."""
    from training.affinity.evaluate import EvalInputError
    from training.affinity.plots import plot_metrics_at_k, plot_reliability
    from training.affinity.report import run_evaluation

    ev, search = _settings(
        target, candidates, split, test_days, valid_days, min_candidates,
        als_trials, bpr_trials, seed, threads, compare_bpr, calibration_pairs,
    )  # fmt: skip
    tables = _load(data, engine, memory_limit)
    try:
        with _Bars() as bars:
            run = run_evaluation(tables, ev, search, name or data.resolve().name, bars)
    except EvalInputError as exc:
        fail(str(exc))
    report = run.report
    if plots is not None:
        plot_metrics_at_k(report, plots / "metrics_at_k.png", ev.ks)
        if run.reliability is not None:
            plot_reliability(run.reliability, plots / "reliability.png")
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    out.print(_metrics_table(report))
    out.print({k: v for k, v in report["ratios"].items()})
    cal = report.get("calibration") or {}
    if "brier" in cal:
        out.print(
            f"P(redeem) calibration ({cal['method']}, fitted on validation): Brier "
            f"{cal['brier']:.4f} vs {cal['brier_base_rate']:.4f} for the base rate"
        )


def train_affinity_command(
    data: DataOpt,
    target: TargetOpt = "offers",
    candidates: CandidatesOpt = "held",
    split: SplitOpt = None,
    test_days: DaysOpt = None,
    valid_days: DaysOpt = None,
    min_candidates: MinCandOpt = 2,
    calibration_pairs: CalPairsOpt = CalibrationPairs.held,
    als_trials: TrialsOpt = 6,
    bpr_trials: TrialsOpt = 3,
    compare_bpr: CompareBprOpt = CompareBpr.auto,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    name: NameOpt = None,
    model_name: Annotated[str, typer.Option(help="registered model name")] = "offers-affinity",
    tracking_uri: TrackingUriOpt = None,
    policy_gate: PolicyGateOpt = True,
    engine: EngineOpt = "duckdb",
    memory_limit: MemoryOpt = None,
) -> None:
    """Train the shipped affinity model, register it as challenger and gate it vs champion
    (its NDCG and, with --policy-gate, the off-policy value of the decisions it leads to)."""
    quiet_mlflow()
    from training.affinity.evaluate import EvalInputError
    from training.affinity.train import DEFAULT_GATE, train_affinity
    from training.registry import ModelRegistry

    ev, search = _settings(
        target, candidates, split, test_days, valid_days, min_candidates,
        als_trials, bpr_trials, seed, threads, compare_bpr, calibration_pairs,
    )  # fmt: skip
    tables = _load(data, engine, memory_limit)
    registry = ModelRegistry(tracking_uri)
    use_policy_gate(registry, data, policy_gate)
    try:
        with _Bars() as bars:
            result = train_affinity(
                data, ev, search, registry, name=model_name, dataset=name, progress=bars,
                tables=tables,
            )  # fmt: skip
    except EvalInputError as exc:
        fail(str(exc))
    champ = result.champion_version
    t = Table(title=f"{model_name}: new version {result.version} vs champion")
    t.add_column("metric")
    t.add_column(f"new v{result.version}", justify="right")
    t.add_column(f"champion v{champ}" if champ else "champion (none)", justify="right")
    keys = [
        k
        for k in result.metrics
        if k.startswith(("recall@", "ndcg@"))
        or k in ("map@10", "precision@10")
        or k.startswith("catalog_coverage")
    ]
    for k in keys:
        theirs = (result.champion_metrics or {}).get(k)
        mine = result.metrics[k]
        better = theirs is not None and mine > theirs
        t.add_row(
            f"[bold]{k}[/]" if k == DEFAULT_GATE.metric else k,
            f"[green]{mine:.4f}[/]" if better else f"{mine:.4f}",
            "-" if theirs is None else f"{theirs:.4f}",
        )
    if champ:
        t.caption = f"champion figures: {result.champion_basis}"
    out.print(t)
    if (line := policy_line(result.decision)) is not None:
        out.print(line)
    out.print(gate_verdict(result.version, result.decision))
    out.print(f"tracking: {registry.tracking_uri}")


def promote(
    name: Annotated[str, typer.Argument(help="registered model name, e.g. offers-affinity")],
    version: Annotated[str | None, typer.Option(help="version to make champion")] = None,
    rollback: Annotated[bool, typer.Option(help="promote the previous champion")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Force a version to champion (no gate); promoting an earlier version is a rollback."""
    from training.registry import ModelRegistry, RegistryError

    if (version is None) == (not rollback):
        fail("give exactly one of --version V or --rollback")
    registry = ModelRegistry(tracking_uri)
    try:
        if rollback:
            version = registry.rollback(name)
        else:
            assert version is not None
            registry.promote(name, version, reason="forced: offers promote")
    except RegistryError as exc:
        fail(str(exc))
    out.print(f"{name} version {version} is now [bold]champion[/] ({registry.tracking_uri})")


def register(app: typer.Typer) -> None:
    """Add ``evaluate affinity``, ``train affinity`` and ``promote`` to ``app``."""
    evaluate_group(app).command("affinity")(evaluate_affinity_command)
    train_group(app).command("affinity")(train_affinity_command)
    app.command("promote")(promote)
