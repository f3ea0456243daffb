"""What a policy that sees only what the program observes could reach (simulated programs).

The oracle of ``offers evaluate policy`` knows each pair's true effect, per-pair noise and harm
included. From the realistic level on, most of that noise cannot be predicted from anything the
program records (``pair_sigma``, harm per pair; docs/simulator.md), so "a share of the oracle"
mixes two things: what the models miss, and what nobody could know.

The *observable oracle* separates them. The true incremental spend and the true P(redeem) of
every eligible pair are projected on what the program observes (the member's feature row and
the offer) by gradient-boosted trees fitted **to the truth itself**, cross-fitted over members
(each member's projection comes from trees that never saw that member). The engine's allocator
then chooses on the projected value, within the engine's true expected spend (the same
constraint as ``oracle_at_engine_spend``), and the choice is scored with the truth. A learner
sees noisy outcomes, not the truth, so this is an upper bound on what the models could learn from
these features, not a target they can be expected to reach.

``level_errors`` is the other half of the diagnosis: how far each offer's point level (the
effect before the lower confidence bound is taken) is from the truth's mean over the eligible
members, in units of the standard error the engine subtracts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from training.policy.evaluate import allocate_as_engine, truth_of_picks

__all__ = ["feature_matrix", "level_errors", "observable_oracle", "project_on_features"]

NOT_FEATURES = ("member_id", "as_of")


def feature_matrix(feats: pd.DataFrame) -> np.ndarray:
    """The member feature rows as float32: text and booleans as category codes, ids and the
    snapshot time left out."""
    frame = feats.drop(columns=[c for c in NOT_FEATURES if c in feats.columns])
    out = np.empty((len(frame), frame.shape[1]), dtype=np.float32)
    for j, column in enumerate(frame.columns):
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[:, j] = values.to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            out[:, j] = values.astype("category").cat.codes.to_numpy(dtype=np.float32)
    return out


def project_on_features(
    X: np.ndarray,
    mask: np.ndarray,
    target: np.ndarray,
    *,
    folds: int = 2,
    max_rows: int = 400_000,
    seed: int = 0,
    trees: int = 400,
) -> tuple[np.ndarray, float]:
    """``target`` (members x offers) projected on (member row of ``X``, offer) over the pairs of
    ``mask``, cross-fitted by member over ``folds`` folds (at most ``max_rows`` sampled pairs fit
    each fold's trees). Returns the projection (0 off the mask) and its out-of-fold R^2."""
    import lightgbm as lgb

    X, mask, target = np.asarray(X), np.asarray(mask, dtype=bool), np.asarray(target)
    if X.ndim != 2 or X.shape[0] != mask.shape[0] or target.shape != mask.shape:
        raise ValueError(
            f"project_on_features: X {X.shape}, mask {mask.shape} and target {target.shape} "
            "must have one row per member (and target the mask's shape)"
        )
    if folds < 2:
        raise ValueError(f"project_on_features: folds must be >= 2; got {folds}")
    rng = np.random.default_rng(seed)
    i, j = np.nonzero(mask)
    design = np.hstack([X[i], j[:, None].astype(np.float32)])
    y = target[i, j].astype(np.float64)
    fold = rng.integers(0, folds, int(mask.shape[0]))[i]  # int(): the array overload for mypy
    pred = np.zeros_like(y)
    for f in range(folds):
        fit_rows, out_rows = np.flatnonzero(fold != f), fold == f
        if len(fit_rows) == 0 or not out_rows.any():
            raise ValueError("project_on_features: too few members for the folds")
        if len(fit_rows) > max_rows:
            fit_rows = rng.choice(fit_rows, max_rows, replace=False)
        model = lgb.LGBMRegressor(
            n_estimators=trees, learning_rate=0.05, num_leaves=63, min_child_samples=50,
            n_jobs=1, verbose=-1, random_state=seed,
        )  # fmt: skip
        model.fit(design[fit_rows], y[fit_rows], categorical_feature=[design.shape[1] - 1])
        pred[out_rows] = model.predict(design[out_rows])
    var = y.var()
    r2 = float(1.0 - ((y - pred) ** 2).mean() / var) if var > 0 else float("nan")
    out = np.zeros(mask.shape, dtype=np.float64)
    out[i, j] = pred
    return out, r2


def observable_oracle(
    engine: Any,
    prepared: Any,
    feats: pd.DataFrame,
    true_p: np.ndarray,
    true_s: np.ndarray,
    spend: float,
    k: int,
    seed: int = 0,
) -> dict[str, Any]:
    """The observable oracle within ``spend`` (module docstring): its true value and spend,
    the out-of-fold R^2 of the two projections and of the value they give."""
    o = engine.offers
    margin = engine.settings.scoring.margin_rate
    mask = prepared.mask
    X = feature_matrix(feats)
    s_proj, r2_s = project_on_features(X, mask, true_s, seed=seed)
    p_proj, r2_p = project_on_features(X, mask, true_p, seed=seed)
    p_proj = np.clip(p_proj, 0.0, 1.0)
    value_true = margin * true_s - true_p * o.cost[None, :]
    value_proj = margin * s_proj - p_proj * o.cost[None, :]
    d = (value_true - value_proj)[mask]
    var = value_true[mask].var()
    picks = allocate_as_engine(
        engine,
        prepared,
        np.asarray(value_proj, np.float32),
        np.asarray(true_p, np.float32),
        k,
        spend,
    )
    return {
        **truth_of_picks(picks, true_p, true_s, o.cost, margin),
        "r2_true_spend_effect": r2_s,
        "r2_true_p_redeem": r2_p,
        "r2_true_value": float(1.0 - (d**2).mean() / var) if var > 0 else float("nan"),
    }


def level_errors(
    lcb: np.ndarray, se: np.ndarray, z: float, mask: np.ndarray, true_s: np.ndarray
) -> dict[str, float]:
    """Per offer with eligible members: the point effect (``lcb`` + ``z`` x ``se``, averaged over
    its eligible members) minus the true effect's mean there, in units of ``se``. Returns the
    mean, the root mean square and the share above 2 of those z-scores (an honest ``se`` gives a
    root mean square near 1) and the root mean square error in currency."""
    lcb, se, true_s = (np.asarray(a, dtype=np.float64) for a in (lcb, se, true_s))
    usable = np.asarray(mask, dtype=bool) & np.isfinite(lcb)
    cols = np.flatnonzero(usable.any(axis=0) & (se > 0))
    if len(cols) == 0:
        return {"offers": 0}
    m = usable[:, cols]
    n = m.sum(axis=0)
    point = (np.where(m, lcb[:, cols], 0.0).sum(axis=0) / n) + z * se[cols]
    truth = np.where(m, true_s[:, cols], 0.0).sum(axis=0) / n
    err = point - truth
    zs = err / se[cols]
    return {
        "offers": len(cols),
        "mean_z": float(zs.mean()),
        "rms_z": float(np.sqrt((zs**2).mean())),
        "share_z_above_2": float((zs > 2).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
    }
