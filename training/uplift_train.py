"""Train the uplift model on a data directory's campaigns, log it to MLflow, register, gate.

Steps (``train_uplift``):

1. the training set of every send and control member (:mod:`training.uplift_data`);
2. the time-based holdout (:func:`training.uplift_data.time_split`): the latest campaigns are
   the test split, training rows are those whose outcome window ended before it;
3. the feature encoder and one learner per outcome (conversion, spend), fitted on the training
   rows, level-calibrated (:mod:`training.uplift_calibration`, on by default), exported to
   ONNX; the largest ONNX-vs-native difference on the test rows is logged
   (``onnx_max_abs_diff.<outcome>``), a warning is logged above 1e-4 and training fails above
   1e-2 (a wrong tree or readout, not float32 rounding: spend effects are sums of currency
   amounts in float32 inside the ONNX tree ensemble, a few 1e-5 on the simulated program);
4. metrics on the test split (:mod:`training.uplift_scoring`; the gate metric ``qini`` is the
   gate outcome's Qini), and, when the data directory holds a simulated program's
   ``truth/assignments.parquet``, the correlation with the true effects;
5. one MLflow run (params, metrics, Qini plots, the test split, the pyfunc with signature and
   input example, data window, code version) registered as ``offers-uplift`` with the alias
   ``challenger``, then the registry's champion gate (:mod:`training.registry`). The test
   window id (a hash of the test rows and outcomes, treatment grain, outcome window, gate
   outcome) is stored with the version, so champions are compared on the same rows; a champion
   stored with another window is re-scored on this one when its training outcomes ended by
   this test start and it predicts the same treatments.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features import schema as S
from models.uplift import LEARNERS
from models.uplift.base import DEFAULT_BASE_PARAMS, BaseUpliftLearner
from models.uplift.encoding import FeatureEncoder
from models.uplift.onnx_export import OnnxUpliftPredictor, export_onnx
from models.uplift.pyfunc import ENTRY_POINT, save_artifacts, signature
from training.registry import Gate, GateDecision, ModelRegistry
from training.uplift_calibration import apply_shifts, level_shifts
from training.uplift_data import (
    CONVERSION,
    OUTCOMES,
    TREATMENT,
    TrainingSetConfig,
    UpliftTrainingSet,
    build_training_set,
    time_split,
)
from training.uplift_scoring import GATE_METRIC, plot_qini_grid, score_effects

__all__ = [
    "DEFAULT_GATE",
    "PARITY_TOLERANCE",
    "UPLIFT_MODEL",
    "UpliftTrainError",
    "UpliftTrainResult",
    "UpliftTrainSettings",
    "code_version",
    "fit_uplift",
    "train_uplift",
]

log = logging.getLogger(__name__)

UPLIFT_MODEL = "offers-uplift"
DEFAULT_GATE = Gate(GATE_METRIC, higher_is_better=True)
PARITY_TOLERANCE = 1e-4  # warn above
PARITY_FAILURE = 1e-2  # fail above
_REQUIREMENTS = ("numpy", "pandas", "pyarrow", "onnxruntime", "mlflow")
Progress = Callable[[str], None]


class UpliftTrainError(RuntimeError):
    """Training cannot produce a model as asked (names the outcome, treatment or check)."""


@dataclass(frozen=True)
class UpliftTrainSettings:
    """What to train: learner, base learner, outcomes, treatment grain, window and split."""

    learner: str = "S"
    base_learner: str = "lightgbm"
    base_params: dict[str, Any] | None = None
    outcomes: tuple[str, ...] = OUTCOMES
    gate_outcome: str = CONVERSION
    treatment: Literal["kind", "offer"] = "kind"
    window_days: float = 14.0
    control_label: str = "control"
    test_share: float = 0.2
    split_at: str | None = None
    use_propensity: bool = False
    calibrate_level: bool = True
    min_treatment_rows: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.learner not in LEARNERS:
            raise ValueError(f"learner must be one of {sorted(LEARNERS)}; got {self.learner!r}")
        unknown = sorted(set(self.outcomes) - set(OUTCOMES))
        if unknown or not self.outcomes:
            raise ValueError(f"outcomes must be among {OUTCOMES}; got {self.outcomes}")
        if self.gate_outcome not in self.outcomes:
            raise ValueError(
                f"gate_outcome {self.gate_outcome!r} must be one of the outcomes {self.outcomes}"
            )
        if self.learner == "CT" and self.outcomes != (CONVERSION,):
            raise ValueError("learner CT supports the binary outcome only: outcomes=conversion")

    def training_set_config(self) -> TrainingSetConfig:
        return TrainingSetConfig(
            window_days=self.window_days,
            treatment=self.treatment,
            control_label=self.control_label,
        )


@dataclass
class FittedUplift:
    """Learners per outcome with their encoder, split and test scores (before logging)."""

    data: UpliftTrainingSet
    train: np.ndarray
    test: np.ndarray
    test_start: pd.Timestamp
    encoder: FeatureEncoder
    learners: dict[str, BaseUpliftLearner]
    onnx: dict[str, bytes]
    effects: dict[str, np.ndarray]  # native predictions on the test rows
    metrics: dict[str, float]
    treatments: list[str]
    parity: dict[str, float] = field(default_factory=dict)


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
    repo = Path(__file__).resolve().parents[1]
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


def _propensity(frame: pd.DataFrame) -> np.ndarray:
    """Logged propensities; missing ones replaced by the arm's share of the rows."""
    p = frame[S.PROPENSITY].to_numpy(dtype=np.float64)
    share = frame[TREATMENT].map(frame[TREATMENT].value_counts(normalize=True)).to_numpy()
    missing = ~np.isfinite(p)
    if missing.any():
        log.info("propensity missing on %d rows: using the arm's share", int(missing.sum()))
    return np.where(missing, share, p)


def fit_uplift(
    data: UpliftTrainingSet, settings: UpliftTrainSettings, progress: Progress | None = None
) -> FittedUplift:
    """Split, encode, fit one learner per outcome, export and check ONNX, score the test."""
    step = progress or (lambda what: log.info("uplift: %s", what))
    train, test, test_start = time_split(data, settings.test_share, settings.split_at)
    labels = data.frame[TREATMENT]
    counts = labels[train].value_counts()
    keep = sorted(t for t in data.treatments if counts.get(t, 0) >= settings.min_treatment_rows)
    rare = sorted(set(data.treatments) - set(keep))
    if rare:
        log.warning(
            "treatments with < %d training rows are not modelled: %s",
            settings.min_treatment_rows,
            rare,
        )
    if not keep:
        raise UpliftTrainError(
            f"no treatment has {settings.min_treatment_rows} training rows (counts: "
            f"{counts.to_dict()})"
        )
    in_model = labels.isin([*keep, data.control]).to_numpy()
    train, test = train & in_model, test & in_model
    tr, te = data.frame[train], data.frame[test].reset_index(drop=True)
    encoder = FeatureEncoder().fit(tr[list(data.feature_columns)])
    # fit on exact values, predict on float32-rounded ones (as ONNX does; see the encoder)
    X_tr = encoder.transform(tr[list(data.feature_columns)], float32=False)
    X_te = encoder.transform(te[list(data.feature_columns)])
    prop = _propensity(tr) if settings.use_propensity else None
    learners, onnx_models, effects, parity, level = {}, {}, {}, {}, {}
    for outcome in settings.outcomes:
        step(f"fit {settings.learner}-learner on {outcome} ({len(tr):,} rows)")
        learner = LEARNERS[settings.learner](
            base_learner=settings.base_learner,
            base_params=settings.base_params,
            control=data.control,
            outcome="binary" if outcome == CONVERSION else "continuous",
            random_state=settings.seed,
        )
        y = tr[outcome].to_numpy(dtype=np.float64)
        if outcome != CONVERSION:
            # Effects are differences, unchanged by a constant shift of y; centring keeps the
            # base models' outputs small, so ONNX's float32 sums stay within the parity bound.
            y = y - y.mean()
        labels_tr = tr[TREATMENT].to_numpy(dtype=object)
        learner.fit(X_tr, y, labels_tr, prop)
        if settings.calibrate_level:
            shifts = level_shifts(learner, X_tr, y, labels_tr, None if prop is None else 1 / prop)
            apply_shifts(learner, shifts)
            named = zip(learner.treatments_, shifts, strict=True)
            level |= {f"level_shift.{outcome}.{t}": float(v) for t, v in named}
        if list(learner.treatments_) != keep:
            raise UpliftTrainError(f"{outcome}: fitted treatments {learner.treatments_} != {keep}")
        step(f"export {outcome} to ONNX")
        onnx_models[outcome] = export_onnx(learner)
        native = learner.predict(X_te)
        served = OnnxUpliftPredictor(onnx_models[outcome]).predict(X_te)
        parity[outcome] = float(np.abs(served - native).max()) if len(X_te) else 0.0
        if parity[outcome] > PARITY_FAILURE:
            raise UpliftTrainError(
                f"{outcome}: ONNX differs from the native model by {parity[outcome]:.2e} "
                f"(> {PARITY_FAILURE}) on the test rows"
            )
        if parity[outcome] > PARITY_TOLERANCE:
            log.warning(
                "%s: ONNX differs from the native model by %.2e (> %g) on the test rows",
                outcome,
                parity[outcome],
                PARITY_TOLERANCE,
            )
        learners[outcome], effects[outcome] = learner, native
    metrics = score_effects(te, effects, keep, data.control, settings.gate_outcome)
    if GATE_METRIC not in metrics:
        raise UpliftTrainError(
            f"gate metric '{GATE_METRIC}' is undefined on the test split ({len(te)} rows): no "
            f"treatment of {keep} has a defined Qini for {settings.gate_outcome!r}"
        )
    metrics |= {f"onnx_max_abs_diff.{o}": v for o, v in parity.items()}
    metrics |= {"rows.train": float(len(tr)), "rows.test": float(len(te))} | level
    return FittedUplift(
        data=data,
        train=train,
        test=test,
        test_start=test_start,
        encoder=encoder,
        learners=learners,
        onnx=onnx_models,
        effects=effects,
        metrics=metrics,
        treatments=keep,
        parity=parity,
    )


def truth_metrics_for(fitted: FittedUplift, data_dir: Path) -> dict[str, float]:
    """Correlation with the true effects and ATE error on the test rows, for a simulated
    program (``truth/assignments.parquet``); empty for other data."""
    from training.uplift_simulated import TAU, attach_truth, load_assignments, truth_metrics

    if not (Path(data_dir) / "truth" / "assignments.parquet").is_file():
        return {}
    test = fitted.data.subset(np.flatnonzero(fitted.test))
    taus = attach_truth(test, load_assignments(data_dir))
    out: dict[str, float] = {}
    for outcome, pred in fitted.effects.items():
        rows = truth_metrics(test.frame[TREATMENT], pred, fitted.treatments, taus[TAU[outcome]])
        for r in rows:
            for key in ("truth_corr", "ate_error", "ate_true"):
                if np.isfinite(r[key]):
                    out[f"{key}.{outcome}.{r['treatment']}"] = float(r[key])
    return out


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
    tr = data.subset(np.flatnonzero(fitted.train)).window()
    te = data.subset(np.flatnonzero(fitted.test)).window()
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
    out = []
    for dist in _REQUIREMENTS:
        try:
            out.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            out.append(dist)
    return out


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


def train_uplift(
    data_dir: Path | str,
    settings: UpliftTrainSettings | None = None,
    registry: ModelRegistry | None = None,
    *,
    name: str = UPLIFT_MODEL,
    gate: Gate = DEFAULT_GATE,
    training_set: UpliftTrainingSet | None = None,
    progress: Progress | None = None,
) -> UpliftTrainResult:
    """Fit, log and register the uplift model as challenger, then gate it (module docstring).

    ``training_set`` replaces the one built from ``data_dir`` (it must come from the same data).
    """
    settings = settings or UpliftTrainSettings()
    registry = registry or ModelRegistry()
    data_dir = Path(data_dir)
    step = progress or (lambda what: log.info("uplift: %s", what))
    if training_set is None:
        step("training set: features at each send, outcomes after it")
        training_set = build_training_set(data_dir, settings.training_set_config())
    fitted = fit_uplift(training_set, settings, step)
    metrics = dict(fitted.metrics) | truth_metrics_for(fitted, data_dir)
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
            "learner": settings.learner,
            "feature_config": json.loads(training_set.feature_config.model_dump_json()),
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
