"""Fit the uplift model on a training set: split, encode, fit per outcome, calibrate, export.

``fit_uplift(data, settings)`` (no MLflow; ``offers evaluate uplift`` and ``train_uplift`` use
it):

1. the time-based holdout (:func:`training.uplift.data.time_split`): the latest campaigns are
   the test split, training rows are those whose outcome window ended before it; treatments
   with fewer than ``min_treatment_rows`` training rows are left out of the model;
2. the feature encoder (fitted on the training rows) and one learner per outcome (conversion:
   binary, spend: continuous), level-calibrated (:mod:`training.uplift.calibration`, on by
   default) and exported to ONNX. The largest ONNX-vs-native difference on the test rows (a
   seeded sample of ``parity_rows`` of them, every treatment) is kept
   (``onnx_max_abs_diff.<outcome>``): a warning is logged above 1e-4 and fitting fails
   above 1e-2 (a wrong tree or readout rather than float32 arithmetic);
3. metrics on the test split (:mod:`training.uplift.evaluate`; the gate metric ``qini`` is the
   gate outcome's Qini) and, for a simulated program (``truth_metrics_for``), the correlation
   with the true effects and the ATE error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.sources import schema as S
from models.uplift import LEARNERS
from models.uplift.base import BaseUpliftLearner
from models.uplift.encoding import FeatureEncoder
from models.uplift.onnx_export import OnnxUpliftPredictor, export_onnx
from training.uplift.calibration import (
    apply_scale,
    apply_shifts,
    control_baseline,
    heterogeneity_slope,
    level_fit,
)
from training.uplift.data import (
    CONVERSION,
    OUTCOMES,
    SPEND,
    SPEND_LEVEL,
    TREATMENT,
    TrainingSetConfig,
    UpliftTrainingSet,
    time_split,
)
from training.uplift.evaluate import GATE_METRIC, score_effects

__all__ = [
    "PARITY_FAILURE",
    "PARITY_TOLERANCE",
    "FittedUplift",
    "UpliftTrainError",
    "UpliftTrainSettings",
    "fit_uplift",
    "truth_metrics_for",
]

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4  # warn above
PARITY_FAILURE = 1e-2  # fail above
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
    # one effect per offer or per offer kind; "auto": per offer when the median offer has at
    # least ``min_offer_rows`` logged sends, else per kind. Measured (docs/benchmarks.md,
    # "Policy value"): per offer ranks a member's offers far better with a median of ~900 sends
    # per offer (20k members), and gives mostly noise with ~100 (1,500 members); 300 between.
    treatment: Literal["kind", "offer", "auto"] = "auto"
    min_offer_rows: int = 300
    window_days: float = 14.0
    # the spend level (each treatment's mean effect) is measured over this longer window, on
    # the training rows whose longer window is over by the data end: a send that pulls a
    # purchase forward gains in the first 14 days and loses the replaced basket later. None:
    # over ``window_days`` (the default: over 44 days it was level with the 14-day level on 12
    # simulated programs and left a cold-start member of a small program without any reward;
    # docs/engine.md, "The spend level window").
    level_window_days: float | None = None
    # fewest rows per treatment (and control) with a known level-window outcome; fewer: the
    # spend level falls back to ``window_days`` (logged, and recorded as level_window.spend)
    min_level_rows: int = 30
    control_label: str = "control"
    test_share: float = 0.2
    split_at: str | None = None
    use_propensity: bool = False
    calibrate_level: bool = True
    # empirical-Bayes shrinkage of each treatment's level toward its kind's and the mean of all
    # (training/uplift/calibration.py); off: each treatment keeps its own noisy ATT
    shrink_level: bool = True
    # on: measure each treatment's level campaign by campaign against that campaign's control
    # rows, with a between-campaign variance in its standard error
    # (training/uplift/calibration.py, campaign_att). Off (the default): against the control
    # baseline alone, with the treated rows' noise as the standard error. On makes the
    # standard errors honest (median rms z 1.27 -> 1.00 over 27 simulated programs,
    # bench/uplift_levels.py), but the engine's true value at z = 2 fell from 5,655 to -685
    # summed over 6 programs (docs/engine.md, "The level, campaign by campaign"), so it is
    # not the default
    level_by_campaign: bool = False
    # scale each member's deviation from the treatment's level by its out-of-sample slope on
    # the test split, clipped to [heterogeneity_floor, 1] (training/uplift/calibration.py)
    damp_heterogeneity: bool = True
    heterogeneity_floor: float = 0.05
    min_treatment_rows: int = 50
    seed: int = 0
    # level calibration uses a seeded uniform sample of this many training rows when there are
    # more (None: all): a mean over 300,000 rows has a standard error far below the shifts
    level_rows: int | None = 300_000
    # the ONNX parity check compares every treatment's effect on a seeded uniform sample of
    # this many test rows (None: all): it checks float32 arithmetic and the exported trees,
    # which 20,000 rows x every treatment exercise as well as 500,000 (docs/benchmarks.md)
    parity_rows: int | None = 20_000

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
        if self.level_window_days is not None and not self.level_window_days >= self.window_days:
            raise ValueError(
                f"level_window_days must be >= window_days ({self.window_days:g}) or None; got "
                f"{self.level_window_days}"
            )
        if self.level_rows is not None and self.level_rows < 1:
            raise ValueError(f"level_rows must be >= 1 or None; got {self.level_rows}")
        if self.parity_rows is not None and self.parity_rows < 1:
            raise ValueError(f"parity_rows must be >= 1 or None; got {self.parity_rows}")
        if self.learner == "CT" and self.outcomes != (CONVERSION,):
            raise ValueError("learner CT supports the binary outcome only: outcomes=conversion")

    def training_set_config(self) -> TrainingSetConfig:
        if self.treatment == "auto":
            raise ValueError("treatment 'auto' must be resolved first (resolve_treatment)")
        return TrainingSetConfig(
            window_days=self.window_days,
            treatment=self.treatment,
            control_label=self.control_label,
            level_window_days=self.level_window_days,
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
    # native predictions on the test rows, (n_test, n_treatments): every treatment on control
    # rows, the row's own treatment on treated rows (what the test metrics and the truth
    # metrics read), NaN elsewhere
    effects: dict[str, np.ndarray]
    metrics: dict[str, float]
    treatments: list[str]
    parity: dict[str, float] = field(default_factory=dict)


def _propensity(frame: pd.DataFrame) -> np.ndarray:
    """Logged propensities; missing ones replaced by the arm's share of the rows."""
    p = frame[S.PROPENSITY].to_numpy(dtype=np.float64)
    share = frame[TREATMENT].map(frame[TREATMENT].value_counts(normalize=True)).to_numpy()
    missing = ~np.isfinite(p)
    if missing.any():
        log.info("propensity missing on %d rows: using the arm's share", int(missing.sum()))
    return np.where(missing, share, p)


def _kind_of(frame: pd.DataFrame, control: str) -> dict[str, str] | None:
    """Treatment -> offer kind of the treated rows (None when the treatment is the kind)."""
    if S.KIND not in frame.columns:
        return None
    treated = frame.loc[frame[TREATMENT] != control, [TREATMENT, S.KIND]].dropna()
    pairs = treated.drop_duplicates(TREATMENT)
    if (pairs[TREATMENT].astype(str) == pairs[S.KIND].astype(str)).all():
        return None
    return dict(zip(pairs[TREATMENT].astype(str), pairs[S.KIND].astype(str), strict=True))


def _row_sample(n: int, size: int | None, seed: int) -> np.ndarray | slice:
    """Sorted positions of a seeded uniform sample of ``size`` of ``n`` rows, or every row."""
    if size is None or n <= size:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _level_rows(
    tr: pd.DataFrame,
    outcome: str,
    cal: np.ndarray | slice,
    arms: list[str],
    settings: UpliftTrainSettings,
) -> tuple[np.ndarray, np.ndarray] | None:
    """For the spend level over the level window: the rows of ``tr[cal]`` whose level-window
    outcome is known (a mask) and that outcome (centred like the fitted one; a constant does not
    move an effect), or None to measure the level over ``window_days`` (another outcome, no
    level window, or fewer than ``min_level_rows`` known rows for some arm of ``arms``)."""
    if outcome != SPEND or settings.level_window_days is None or SPEND_LEVEL not in tr.columns:
        return None
    y_long = tr[SPEND_LEVEL].to_numpy(dtype=np.float64)[cal]
    known = np.isfinite(y_long)
    labels = tr[TREATMENT].to_numpy(dtype=object)[cal][known]
    counts = pd.Series(labels).value_counts()
    short = {a: int(counts.get(a, 0)) for a in arms if counts.get(a, 0) < settings.min_level_rows}
    if short:
        log.warning(
            "spend level over %g days instead of %g: fewer than %d rows with a known outcome "
            "for %s",
            settings.window_days,
            settings.level_window_days,
            settings.min_level_rows,
            short,
        )
        return None
    y_known = y_long[known]
    return known, y_known - y_known.mean()


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
    # float32 holds the encoder's 16-bit values exactly: half the memory, the same trees
    X_tr = encoder.transform(tr[list(data.feature_columns)], dtype=np.float32)
    X_te = encoder.transform(te[list(data.feature_columns)], dtype=np.float32)
    prop = _propensity(tr) if settings.use_propensity else None
    labels_te = te[TREATMENT].to_numpy(dtype=object)
    checked = _row_sample(len(X_te), settings.parity_rows, settings.seed)
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
        # the test rows' base-model outputs, once: the calibration changes only the readout's
        # weights, so the slope and the final effects are read from the same outputs
        own_te = learner.columns_of(labels_te)
        outputs_te = learner.readout_.term_outputs(X_te, own_te)
        if settings.calibrate_level:
            cal = _row_sample(len(y), settings.level_rows, settings.seed)
            weights = None if prop is None else 1 / prop[cal]
            long = _level_rows(tr, outcome, cal, [*keep, data.control], settings)
            strata = (
                tr[S.CAMPAIGN_ID].to_numpy(dtype=object)[cal]
                if settings.level_by_campaign and S.CAMPAIGN_ID in tr.columns
                else None
            )
            if long is None:
                fit = level_fit(
                    learner,
                    X_tr[cal],
                    y[cal],
                    labels_tr[cal],
                    weights,
                    groups=_kind_of(tr, data.control),
                    shrink=settings.shrink_level,
                    strata=strata,
                )
                baseline = fit.baseline
            else:
                rows, y_long = long
                fit = level_fit(
                    learner,
                    X_tr[cal][rows],
                    y_long,
                    labels_tr[cal][rows],
                    None if weights is None else weights[rows],
                    groups=_kind_of(tr, data.control),
                    shrink=settings.shrink_level,
                    strata=None if strata is None else strata[rows],
                )
                # the heterogeneity slope below is measured on the window_days outcome
                baseline = control_baseline(learner, X_tr[cal], y[cal], labels_tr[cal], weights)
                level[f"rows.level_window.{outcome}"] = float(rows.sum())
            if outcome == SPEND:
                used = (
                    settings.window_days
                    if long is None or settings.level_window_days is None  # None: long is None
                    else settings.level_window_days
                )
                level[f"level_window.{outcome}"] = float(used)
            apply_shifts(learner, fit.shifts)
            if "tau2_campaign" in fit.info:
                level[f"level_tau2_campaign.{outcome}"] = float(fit.info["tau2_campaign"])
                level[f"level_campaign_cells.{outcome}"] = float(fit.info["cells_campaign"])
            for j, t in enumerate(fit.treatments):
                level[f"level_shift.{outcome}.{t}"] = float(fit.shifts[j])
                level[f"level_att.{outcome}.{t}"] = float(fit.att[j])
                level[f"level_se.{outcome}.{t}"] = float(fit.shrunk_se[j])
            if settings.damp_heterogeneity and len(X_te):
                y_te = te[outcome].to_numpy(dtype=np.float64)
                if outcome != CONVERSION:
                    y_te = y_te - (tr[outcome].to_numpy(dtype=np.float64)).mean()
                slope, slope_se = heterogeneity_slope(
                    learner,
                    baseline,
                    X_te,
                    y_te,
                    labels_te,
                    effects=learner.readout_.combine(outputs_te, own_te),
                )
                scale = float(np.clip(slope, settings.heterogeneity_floor, 1.0))
                apply_scale(learner, scale, fit.shrunk)
                level[f"heterogeneity_slope.{outcome}"] = slope
                level[f"heterogeneity_slope_se.{outcome}"] = slope_se
                level[f"heterogeneity_scale.{outcome}"] = scale
        if list(learner.treatments_) != keep:
            raise UpliftTrainError(f"{outcome}: fitted treatments {learner.treatments_} != {keep}")
        step(f"export {outcome} to ONNX")
        onnx_models[outcome] = export_onnx(learner)
        native = learner.readout_.combine(outputs_te, own_te)
        if len(X_te):
            served = OnnxUpliftPredictor(onnx_models[outcome]).predict(X_te[checked])
            parity[outcome] = float(np.abs(served - learner.predict(X_te[checked])).max())
        else:
            parity[outcome] = 0.0
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
    if settings.calibrate_level:
        metrics["rows.level_calibration"] = float(min(len(tr), settings.level_rows or len(tr)))
    metrics["rows.parity"] = float(min(len(te), settings.parity_rows or len(te)))
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
    from training.uplift.simulated import TAU, attach_truth, load_assignments, truth_metrics

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


def resolve_treatment(settings: UpliftTrainSettings, sends_per_offer: Any) -> UpliftTrainSettings:
    """``settings`` with ``treatment="auto"`` resolved: ``offer`` when the median of
    ``sends_per_offer`` (logged sends of each offer sent at least once) reaches
    ``min_offer_rows``, else ``kind``; other values are returned unchanged."""
    from dataclasses import replace

    if settings.treatment != "auto":
        return settings
    counts = np.asarray(list(sends_per_offer), dtype=np.float64)
    counts = counts[counts > 0]
    median = float(np.median(counts)) if len(counts) else 0.0
    grain: Literal["offer", "kind"] = "offer" if median >= settings.min_offer_rows else "kind"
    log.info("uplift: treatment grain %s (median sends per offer %.0f)", grain, median)
    return replace(settings, treatment=grain)
