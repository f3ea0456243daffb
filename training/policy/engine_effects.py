"""The engine's effects on a randomised test, built by the pieces ``offers train uplift`` ships.

:func:`engine_fit` returns a ``fit_predict`` (the shape of :data:`training.policy.peers.PeerFit`,
but returning one effect matrix per variant) that runs, on a split's training rows, what
``training.uplift.fit.fit_uplift`` runs on a program's training set, with its default settings
(:class:`training.uplift.fit.UpliftTrainSettings`), and then what the serving adapter does:

1. the rows are split in two (seeded, stratified by arm): the learner's rows and, held out,
   ``slope_share`` of them (``UpliftTrainSettings.test_share``, 0.2) for the heterogeneity
   slope. ``fit_uplift`` measures the slope on its time-based test split, rows its learner never
   saw, and ships that learner without refitting; the same is done here (fit on 80%, measure on
   20%, no refit), so the engine is exactly the shipped recipe, at the price of fitting on fewer
   rows (the row ``engine (previous)``, fitted on all of them, shows that price);
2. the learner (``UpliftTrainSettings.learner``, the S-learner over LightGBM with the models'
   default parameters) is fitted; continuous outcomes are centred first, as ``fit_uplift`` does;
3. :func:`training.uplift.calibration.level_fit` (regression-adjusted ATT per arm, shrunk by
   empirical Bayes toward the arm's group, e.g. offer -> kind, and the mean of all), then
   :func:`~training.uplift.calibration.apply_shifts` with its shifts;
4. :func:`~training.uplift.calibration.heterogeneity_slope` on the held-out rows and
   :func:`~training.uplift.calibration.apply_scale` with the slope clipped to
   ``[UpliftTrainSettings.heterogeneity_floor, 1]`` around the shrunk level;
5. the lower confidence bound of ``serving.engine.adapters.model_inputs``: effect minus
   ``z`` times the arm's posterior standard error (``LevelFit.shrunk_se``, the value
   ``offers train uplift`` writes into the model's meta as ``effect_se``), with ``z`` the
   engine's default (:class:`serving.engine.settings.ScoringSettings` ``uncertainty_z``) unless
   given.

Variants (the same fitted learner, one piece removed at a time, cumulatively), so that a table
shows what each piece changes: ``engine (no LCB)``, ``engine (no LCB, no damping)`` and
``engine (no LCB, no damping, no shrinkage)`` (the raw ATT level, as before the shrinkage).
And the alternative to step 1: ``engine (refit on all rows)``, the slope measured as above,
then the learner refitted and its level fitted on all the training rows, damped by that slope
and taken at its lower bound (what ``fit_uplift`` would ship if it refitted after measuring).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.uplift import LEARNERS
from serving.engine.settings import ScoringSettings
from training.policy.randomized import PolicyInputError
from training.uplift.calibration import apply_scale, apply_shifts, heterogeneity_slope, level_fit
from training.uplift.fit import UpliftTrainSettings

__all__ = [
    "ENGINE",
    "NO_DAMPING",
    "NO_LCB",
    "NO_SHRINKAGE",
    "REFIT",
    "SHIPPED",
    "EngineFit",
    "default_uncertainty_z",
    "engine_fit",
    "lower_bound",
]

log = logging.getLogger(__name__)

SHIPPED = UpliftTrainSettings()  # what ``offers train uplift`` fits by default
ENGINE = "engine"
NO_LCB = "engine (no LCB)"
NO_DAMPING = "engine (no LCB, no damping)"
NO_SHRINKAGE = "engine (no LCB, no damping, no shrinkage)"
REFIT = "engine (refit on all rows)"
# (X_train, y_train, arm_train, X_test, n_arms) -> ({variant: (n_test, n_arms - 1)}, info)
EngineFit = Callable[
    [NDArray, NDArray, NDArray, NDArray, int], tuple[dict[str, NDArray], dict[str, Any]]
]


def default_uncertainty_z() -> float:
    """The engine's default ``z`` of its lower confidence bound (``ScoringSettings``)."""
    return float(ScoringSettings.model_validate({}).uncertainty_z)


def lower_bound(effects: NDArray, se: NDArray, z: float) -> NDArray[np.float64]:
    """``effects - z x se`` per arm column: the serving adapter's rule
    (:func:`serving.engine.adapters.lower_bound`), its errors as :class:`PolicyInputError`."""
    from serving.engine.adapters import lower_bound as serving_lower_bound

    try:
        return serving_lower_bound(effects, se, z)
    except ValueError as exc:
        raise PolicyInputError(str(exc)) from None


def _holdout(arm: NDArray, share: float, seed: int) -> tuple[NDArray, NDArray]:
    """Positions of the learner's rows and of the held-out slope rows (stratified by arm)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    splitter = StratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
    fit_rows, slope_rows = next(splitter.split(np.zeros(arm.size), arm))
    return np.sort(fit_rows), np.sort(slope_rows)


def _columns(values: NDArray, treatments: Any, n_arms: int) -> NDArray[np.float64]:
    """Per arm 1..K (columns), from the learner's treatment order; arms it lacks get 0."""
    values = np.atleast_2d(values)
    out = np.zeros((values.shape[0], n_arms - 1))
    for j, k in enumerate(treatments):
        out[:, int(k) - 1] = values[:, j]
    return out


def engine_fit(
    seed: int,
    *,
    learner: str = SHIPPED.learner,
    base_params: dict[str, Any] | None = None,
    groups: Mapping[int, str] | None = None,
    uncertainty_z: float | None = None,
    slope_share: float = SHIPPED.test_share,
) -> EngineFit:
    """The engine's effects as shipped, and its variants (see the module docstring).

    ``groups``: arm index -> group for the shrinkage (e.g. the offer's kind; None: one group);
    ``uncertainty_z``: None for the engine's default. ``info`` holds per arm the raw and shrunk
    level and its standard error, and the slope, its standard error and the scale applied.
    """
    z = default_uncertainty_z() if uncertainty_z is None else float(uncertainty_z)
    if not (np.isfinite(z) and z >= 0):
        raise PolicyInputError(f"uncertainty_z must be a finite number >= 0; got {z!r}")
    if not 0.0 < slope_share < 1.0:
        raise PolicyInputError(f"slope_share must be in (0, 1); got {slope_share}")
    floor = SHIPPED.heterogeneity_floor

    def fit_predict(X_tr, y_tr, arm_tr, X_te, n_arms):
        fit_rows, slope_rows = _holdout(arm_tr, slope_share, seed)
        binary = bool(np.isin(y_tr, (0, 1)).all())
        y = np.asarray(y_tr, dtype=np.float64)
        if not binary:  # as fit_uplift: effects are unchanged, base models' outputs stay small
            y = y - y[fit_rows].mean()
        X_f, y_f, a_f = X_tr[fit_rows], y[fit_rows], arm_tr[fit_rows]
        model = LEARNERS[learner](base_params=base_params, control=0, random_state=seed)
        model.fit(X_f, y_f, a_f)
        grp = {str(k): str(g) for k, g in (groups or {}).items()} or None
        fit = level_fit(model, X_f, y_f, a_f, groups=grp, shrink=SHIPPED.shrink_level)
        # the raw ATT level (no shrinkage): the same fit's shifts moved by att - shrunk
        raw = apply_shifts(copy.deepcopy(model), fit.shifts + fit.att - fit.shrunk)
        apply_shifts(model, fit.shifts)
        shrunk = model.predict(X_te)
        slope, slope_se = heterogeneity_slope(
            model, fit.baseline, X_tr[slope_rows], y[slope_rows], arm_tr[slope_rows]
        )
        scale = float(np.clip(slope, floor, 1.0)) if SHIPPED.damp_heterogeneity else 1.0
        apply_scale(model, scale, fit.shrunk)
        damped = model.predict(X_te)
        se = _columns(fit.shrunk_se, model.treatments_, n_arms)[0]
        effects = {
            ENGINE: lower_bound(_columns(damped, model.treatments_, n_arms), se, z),
            NO_LCB: _columns(damped, model.treatments_, n_arms),
            NO_DAMPING: _columns(shrunk, model.treatments_, n_arms),
            NO_SHRINKAGE: _columns(raw.predict(X_te), model.treatments_, n_arms),
        }
        # the alternative: refit on every training row, damp by the slope measured above
        y_all = np.asarray(y_tr, dtype=np.float64)
        y_all = y_all if binary else y_all - y_all.mean()
        full = LEARNERS[learner](base_params=base_params, control=0, random_state=seed)
        full.fit(X_tr, y_all, arm_tr)
        full_fit = level_fit(full, X_tr, y_all, arm_tr, groups=grp, shrink=SHIPPED.shrink_level)
        apply_scale(apply_shifts(full, full_fit.shifts), scale, full_fit.shrunk)
        full_se = _columns(full_fit.shrunk_se, full.treatments_, n_arms)[0]
        effects[REFIT] = lower_bound(_columns(full.predict(X_te), full.treatments_, n_arms),
                                     full_se, z)  # fmt: skip
        info = {
            "rows_fit": int(fit_rows.size),
            "rows_slope": int(slope_rows.size),
            "uncertainty_z": z,
            "att": _columns(fit.att, model.treatments_, n_arms)[0].tolist(),
            "att_se": _columns(fit.se, model.treatments_, n_arms)[0].tolist(),
            "shrunk": _columns(fit.shrunk, model.treatments_, n_arms)[0].tolist(),
            "shrunk_se": se.tolist(),
            "heterogeneity_slope": float(slope),
            # inf when the learner's effects do not vary (nothing to measure): null in JSON
            "heterogeneity_slope_se": float(slope_se) if np.isfinite(slope_se) else None,
            "heterogeneity_scale": scale,
        }
        log.info("engine: slope %.3f (se %.3f) -> scale %.3f", slope, slope_se, scale)
        return effects, info

    return fit_predict
