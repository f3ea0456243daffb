"""Train the uplift model, log it to MLflow, register ``offers-uplift`` and run the gate.

``train_uplift(data_dir, settings, registry)``:

1. the training set of every send and control member (:mod:`training.uplift.data`);
2. the fit on the time split (:func:`training.uplift.fit.fit_uplift`): encoder, one learner per
   outcome, level calibration, ONNX export with a parity check, test metrics (and, for a
   simulated program, the correlation with the true effects);
3. one MLflow run (params, metrics, Qini plots, the test split, the pyfunc with signature and
   input example, data window, code version) registered as ``offers-uplift`` with the alias
   ``challenger``, then the registry's champion gate (:mod:`training.registry`; gate metric:
   Qini of the gate outcome on the stored test split). The test window id (a hash of the test
   rows and outcomes, treatment grain, outcome window, gate outcome) is stored with the
   version, so champions are compared on the same rows; a champion stored with another window
   is re-scored on this one when its training outcomes ended by this test start and it
   predicts the same treatments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.sources import schema as S
from models.uplift.base import DEFAULT_BASE_PARAMS
from models.uplift.pyfunc import ENTRY_POINT, save_artifacts, signature
from training.registry import Gate, GateDecision, ModelRegistry
from training.uplift.data import (
    OUTCOMES,
    TREATMENT,
    UpliftTrainingSet,
    build_training_set,
    open_tables,
)
from training.uplift.evaluate import GATE_METRIC, plot_qini_grid, score_effects
from training.uplift.fit import (
    FittedUplift,
    Progress,
    UpliftTrainError,
    UpliftTrainSettings,
    fit_uplift,
    resolve_treatment,
    truth_metrics_for,
)

# UpliftTrainSettings, UpliftTrainError and fit_uplift live in training.uplift.fit and are
# re-exported here: this module is the entry point for training the uplift model.
__all__ = [
    "DEFAULT_GATE",
    "UPLIFT_MODEL",
    "UpliftEvaluation",
    "UpliftTrainError",
    "UpliftTrainResult",
    "UpliftTrainSettings",
    "code_version",
    "evaluate_uplift",
    "fit_uplift",
    "test_window_id",
    "train_uplift",
]

log = logging.getLogger(__name__)

UPLIFT_MODEL = "offers-uplift"
DEFAULT_GATE = Gate(GATE_METRIC, higher_is_better=True)
_REQUIREMENTS = ("numpy", "pandas", "pyarrow", "onnxruntime", "mlflow")


@dataclass
class UpliftTrainResult:
    """The new version, the gate's decision and the metrics."""

    version: str
    decision: GateDecision
    metrics: dict[str, float]
    fitted: FittedUplift
    test_window: str


def code_version() -> dict[str, str]:
    """``git_sha`` (and ``git_dirty``) of the repository holding this code, when git is there."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": "unknown"}
    if sha.returncode != 0:
        return {"git_sha": "unknown"}
    return {"git_sha": sha.stdout.strip(), "git_dirty": str(bool(dirty.stdout.strip())).lower()}


def test_window_id(fitted: FittedUplift, settings: UpliftTrainSettings) -> str:
    """Identity of the stored test split: its rows and outcomes, grain, window, gate outcome."""
    te = fitted.data.frame[fitted.test]
    cols = [S.EVENT_ID, S.MEMBER_ID, S.TS, TREATMENT, *OUTCOMES]
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(te[cols], index=False).to_numpy().tobytes()
    ).hexdigest()[:12]
    return "|".join(
        [
            digest,
            settings.treatment,
            f"{settings.window_days:g}d",
            settings.gate_outcome,
            str(te[S.TS].min()),
            str(te[S.TS].max()),
        ]
    )


def _params(fitted: FittedUplift, settings: UpliftTrainSettings) -> dict[str, Any]:
    data = fitted.data
    tr = data.window(fitted.train)
    te = data.window(fitted.test)
    params: dict[str, Any] = {
        k: v for k, v in asdict(settings).items() if k not in ("base_params", "outcomes")
    }
    params |= {
        "outcomes": ",".join(settings.outcomes),
        "treatments": ",".join(fitted.treatments),
        "base_params": {
            **DEFAULT_BASE_PARAMS[settings.base_learner],
            **(settings.base_params or {}),
        },
        "n_features": len(fitted.encoder.feature_names_out_),
        "test_start": str(fitted.test_start),
        "data_end": str(data.data_end),
        "dropped": data.dropped,
        **{f"train.{k}": v for k, v in tr.items()},
        **{f"test.{k}": v for k, v in te.items()},
    }
    return params


def _requirements() -> list[str]:
    from training.affinity.train import pinned

    return pinned(_REQUIREMENTS)


class _Rescorer:
    """Score a champion of another test window on this run's test split, when that is fair."""

    def __init__(
        self, fitted: FittedUplift, settings: UpliftTrainSettings, registry: Any, name: str
    ) -> None:
        self.fitted, self.settings, self.registry, self.name = fitted, settings, registry, name

    def __call__(self, champion: str, window: str) -> float | None:
        import mlflow

        # the registry passes the champion's version (older revisions: models:/<name>/<version>)
        version = str(champion).rsplit("/", 1)[-1]
        model_uri = self.registry.model_uri(self.name, version)
        mv = self.registry.client.get_model_version(self.name, version)
        until = self.registry.client.get_run(mv.run_id).data.params.get("train.outcomes_until")
        if until is None or pd.Timestamp(until) > self.fitted.test_start:
            log.warning(
                "champion %s trained on outcomes up to %s: not comparable", model_uri, until
            )
            return None
        try:
            previous = mlflow.get_tracking_uri()
            mlflow.set_tracking_uri(self.registry.tracking_uri)
            try:
                model = mlflow.pyfunc.load_model(model_uri)
            finally:
                mlflow.set_tracking_uri(previous)
            te = self.fitted.data.frame[self.fitted.test].reset_index(drop=True)
            out = model.predict(te[list(self.fitted.data.feature_columns)])
            outcome = self.settings.gate_outcome
            cols = [f"{outcome}:{t}" for t in self.fitted.treatments]
            pred = out[cols].to_numpy(dtype=np.float64)
        except Exception as exc:  # another shape of model: cannot compare
            log.warning("cannot re-score champion %s: %s", model_uri, exc)
            return None
        scores = score_effects(
            te, {outcome: pred}, self.fitted.treatments, self.fitted.data.control, outcome
        )
        return scores.get(GATE_METRIC)


@dataclass(frozen=True)
class UpliftEvaluation:
    """A fit on the time-based training split, scored on the test split (nothing registered)."""

    settings: UpliftTrainSettings  # the treatment grain resolved
    training_set: UpliftTrainingSet
    fitted: FittedUplift
    metrics: dict[str, float]  # test-split scores, and the truth metrics on a simulated program


def evaluate_uplift(
    data_dir: Path | str,
    settings: UpliftTrainSettings | None = None,
    *,
    training_set: UpliftTrainingSet | None = None,
    progress: Progress | None = None,
    engine: str = "duckdb",
    memory_limit: str | None = None,
) -> UpliftEvaluation:
    """Resolve the treatment grain, build the training set (unless given: it must come from
    ``data_dir``), fit on the training split and score the test split. :func:`train_uplift`
    does this, then logs, registers and gates."""
    settings = settings or UpliftTrainSettings()
    data_dir = Path(data_dir)
    step = progress or (lambda what: log.info("uplift: %s", what))
    if settings.treatment == "auto" and training_set is not None:
        # a given training set already has its grain
        settings = replace(settings, treatment=training_set.config.treatment)
    elif settings.treatment == "auto":
        settings = resolve_treatment(settings, sends_per_offer(data_dir))
        step(f"treatment grain: {settings.treatment}")
    if training_set is None:
        step("training set: features at each send, outcomes after it")
        tables = open_tables(data_dir, engine, memory_limit)
        training_set = build_training_set(tables, settings.training_set_config())
        del tables  # the backend's buffers go with the connection
    fitted = fit_uplift(training_set, settings, step)
    metrics = dict(fitted.metrics) | truth_metrics_for(fitted, data_dir)
    return UpliftEvaluation(settings, training_set, fitted, metrics)


def train_uplift(
    data_dir: Path | str,
    settings: UpliftTrainSettings | None = None,
    registry: ModelRegistry | None = None,
    *,
    name: str = UPLIFT_MODEL,
    gate: Gate = DEFAULT_GATE,
    training_set: UpliftTrainingSet | None = None,
    progress: Progress | None = None,
    engine: str = "duckdb",
    memory_limit: str | None = None,
) -> UpliftTrainResult:
    """Fit, log and register the uplift model as challenger, then gate it (module docstring).

    ``training_set`` replaces the one built from ``data_dir`` (it must come from the same data);
    otherwise it is built on ``engine`` with ``memory_limit`` (:func:`open_tables`).
    """
    registry = registry or ModelRegistry()
    data_dir = Path(data_dir)
    step = progress or (lambda what: log.info("uplift: %s", what))
    ev = evaluate_uplift(
        data_dir,
        settings,
        training_set=training_set,
        progress=step,
        engine=engine,
        memory_limit=memory_limit,
    )
    settings, training_set, fitted, metrics = ev.settings, ev.training_set, ev.fitted, ev.metrics
    window = test_window_id(fitted, settings)
    step("log and register in MLflow")
    with tempfile.TemporaryDirectory(prefix="offers-uplift-") as tmp:
        tmp_dir = Path(tmp)
        te = training_set.frame[fitted.test].reset_index(drop=True)
        features = te[list(training_set.feature_columns)]
        meta = {
            "outcomes": list(settings.outcomes),
            "treatments": fitted.treatments,
            "control": training_set.control,
            "treatment_grain": settings.treatment,
            "window_days": settings.window_days,
            "level_window_days": settings.level_window_days,
            "learner": settings.learner,
            "feature_config": json.loads(training_set.feature_config.model_dump_json()),
            # posterior standard error of each treatment's level (empirical Bayes), for the
            # engine's lower confidence bound (ScoringSettings.uncertainty_z)
            "effect_se": {
                o: {
                    t: fitted.metrics[f"level_se.{o}.{t}"]
                    for t in fitted.treatments
                    if f"level_se.{o}.{t}" in fitted.metrics
                }
                for o in settings.outcomes
            },
        }
        arts = save_artifacts(fitted.onnx, fitted.encoder, meta, tmp_dir / "model")
        files = [
            plot_qini_grid(
                te,
                fitted.effects[o],
                fitted.treatments,
                training_set.control,
                o,
                tmp_dir / f"qini_{o}.png",
            )
            for o in settings.outcomes
        ]
        split_path = tmp_dir / "test_split.parquet"
        te.to_parquet(split_path, index=False)
        files.append(split_path)
        version = registry.log_and_register(
            name,
            python_model=ENTRY_POINT,
            artifacts=arts,
            signature=signature(features.head(5), settings.outcomes, fitted.treatments),
            input_example=features.head(5),
            params=_params(fitted, settings),
            metrics=metrics,
            test_window=window,
            tags={"data_dir": str(data_dir.resolve()), **code_version()},
            files=files,
            pip_requirements=_requirements(),
            run_name=f"uplift-{settings.learner}-{data_dir.name}",
        )
    decision = registry.gate(name, version, gate, _Rescorer(fitted, settings, registry, name))
    step(f"gate: {decision.reason}")
    return UpliftTrainResult(version, decision, metrics, fitted, window)


def sends_per_offer(data_dir: Path, training_set: UpliftTrainingSet | None = None) -> list[int]:
    """Logged sends of each offer: from the given training set, or read from ``data_dir``'s
    ``offer_events`` (two columns, no features)."""
    if training_set is not None:
        sent = training_set.frame[S.OFFER_ID].dropna()
        return sent.value_counts().tolist()
    from features.sources.io import find_table_file, read_raw

    path = find_table_file(Path(data_dir), "offer_events")
    if path is None:
        return []
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        ev = pq.read_table(path, columns=[S.EVENT, S.OFFER_ID]).to_pandas()
    else:
        ev = read_raw(path)[[S.EVENT, S.OFFER_ID]]
    sent = ev.loc[ev[S.EVENT] == "sent", S.OFFER_ID].dropna()
    return sent.value_counts().tolist()
