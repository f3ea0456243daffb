"""Level calibration of a fitted uplift learner: each treatment's mean effect set to a robust ATT.

Why: tree learners shrink treatment effects towards zero. The S-learner only sees a treatment
through its indicator column, which few splits use when the effect is small next to the noise,
so on the simulated program its mean predicted effect on the treated was a fraction of the
truth (conversion, 50,000 members: mean absolute ATE error 0.027, true effects ~0.02-0.10),
while its ranking was the best of our learners.

How: for each treatment ``k``, the average effect on its treated training rows is estimated by
regression adjustment, ``ATT_k = mean(y - f0(x))`` over the rows of ``k``, where ``f0`` is an
outcome model fitted on the control rows only (so it is evaluated out of sample, and eligibility
differences between the arms are adjusted for through ``x``). The learner's effects for ``k``
are then shifted by ``ATT_k - mean(predicted effect of k on those rows)``: the ranking within a
treatment is unchanged, the level is corrected (mean absolute ATE error 0.027 -> 0.011 on
conversion and 2.27 -> 1.35 on spend in the run above; docs/benchmarks.md). The shift is folded
into the learner's linear readout (its intercept), so ``predict`` and the ONNX export include it.

Shrinkage (empirical Bayes): one treatment's ATT on a few hundred sends is mostly noise when
effects are small (the ``realistic`` simulator level, like a real e-mail test: a per-offer ATT of
12.9 on spend for a true 0.6). Each ATT is therefore pulled toward the mean of its group (the
offer's kind), and each group's mean toward the mean of every treated row, by
:func:`shrink_effects`: a normal-normal model whose between-treatment variance is estimated from
the data (DerSimonian-Laird), so an offer keeps its own level only as far as the data can tell it
apart from its kind.

Heterogeneity: a learner's effects also vary from member to member, and on a small program
that variation can be pure noise (on the realistic 20k program one offer's predicted spend
effects ranged -16..18 with a correlation of -0.005 with the truth, and the engine sent it to
the members with the highest noise). :func:`heterogeneity_slope` measures, out of sample, how
much of the predicted deviation from each treatment's mean shows up in the outcome (the slope
of ``y - f0(x)`` on it within treatments, less the same slope on control rows);
:func:`apply_scale` scales the deviations by that slope (clipped to [floor, 1]) around the
shrunk level, so noise is damped and real
heterogeneity (slope near 1) is kept. The ranking within a treatment is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.uplift import make_base_estimator
from models.uplift.base import ALL_COLUMNS, NO_COLUMN, BaseUpliftLearner

__all__ = [
    "LevelFit",
    "apply_scale",
    "apply_shifts",
    "campaign_att",
    "control_baseline",
    "heterogeneity_slope",
    "level_fit",
    "level_shifts",
    "shrink_effects",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LevelFit:
    """Per treatment (the learner's order): the raw ATT, its standard error, the shrunk ATT and
    its posterior standard error, and the shift that moves the learner's mean effect there."""

    treatments: tuple[str, ...]
    att: NDArray[np.float64]
    se: NDArray[np.float64]
    shrunk: NDArray[np.float64]
    shrunk_se: NDArray[np.float64]
    shifts: NDArray[np.float64]
    info: dict[str, float]
    baseline: Any = None  # X -> E[y | x, control] (the outcome model fitted on control rows)


MIN_POOLED = 3  # estimates needed at a level before its variance is estimated and pooled


def _dl_tau2(
    x: NDArray[np.float64], v: NDArray[np.float64], centre: NDArray[np.float64], df: int
) -> float:
    """DerSimonian-Laird between-estimate variance of ``x`` (variances ``v``) around ``centre``."""
    w = 1.0 / v
    q = float(np.sum(w * (x - centre) ** 2))
    denom = float(w.sum() - np.sum(w**2) / w.sum())
    if df <= 0 or denom <= 0:
        return 0.0
    return max(0.0, (q - df) / denom)


def shrink_effects(
    att: Sequence[float] | NDArray[np.float64],
    se: Sequence[float] | NDArray[np.float64],
    groups: Sequence[str] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, float]]:
    """Empirical-Bayes estimates of treatment effects from noisy ones.

    ``att[i]`` estimates effect ``i`` with standard error ``se[i]`` (> 0). Two levels: each group's
    precision-weighted mean is shrunk toward the mean of all, by the between-group variance;
    each estimate is then shrunk toward its group's shrunk mean, by the within-group variance
    (both DerSimonian-Laird; a level with fewer than ``MIN_POOLED`` estimates, or fewer than
    ``MIN_POOLED - 1`` within-group degrees of freedom, is not pooled: the variance cannot be
    estimated from so few). ``groups=None``: one group. Returns the posterior means, their
    standard errors (given the estimated variances) and the variances (``tau2_between``,
    ``tau2_within``)."""
    x = np.asarray(att, dtype=np.float64)
    s = np.asarray(se, dtype=np.float64)
    if x.shape != s.shape or x.ndim != 1:
        raise ValueError(f"att and se must be 1-d of one length; got {x.shape} and {s.shape}")
    if not (np.isfinite(x).all() and np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("att must be finite and se finite and > 0")
    g = (
        np.zeros(len(x), dtype=np.int64)
        if groups is None
        else np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    )
    if len(g) != len(x):
        raise ValueError(f"groups has {len(g)} entries for {len(x)} effects")
    v = s**2
    w = 1.0 / v
    n_g = int(g.max()) + 1 if len(g) else 0
    wg = np.bincount(g, weights=w, minlength=n_g)
    mg = np.bincount(g, weights=w * x, minlength=n_g) / wg
    vg = 1.0 / wg
    mu = float(np.sum(mg / vg) / np.sum(1.0 / vg)) if n_g else 0.0
    # a variance is not estimated from fewer than MIN_POOLED estimates: no pooling at that
    # level (on Hillstrom's two e-mails DL often gave 0 and pooled a well-measured difference)
    tau_b = _dl_tau2(mg, vg, np.full(n_g, mu), n_g - 1) if n_g >= MIN_POOLED else np.inf
    kb = np.ones(n_g) if np.isinf(tau_b) else tau_b / (tau_b + vg)
    mg_post = mu + kb * (mg - mu)
    # incl. the error of the mean it is pulled to (none when the level is not pooled)
    var_mu = 0.0 if np.isinf(tau_b) else 1.0 / np.sum(1.0 / (vg + tau_b))
    vg_post = kb * vg + (1 - kb) ** 2 * var_mu
    df_w = len(x) - n_g
    tau_w = _dl_tau2(x, v, mg[g], df_w) if df_w + 1 >= MIN_POOLED else np.inf
    kw = np.ones(len(x)) if np.isinf(tau_w) else tau_w / (tau_w + v)
    post = mg_post[g] + kw * (x - mg_post[g])
    post_var = kw * v + (1 - kw) ** 2 * vg_post[g]
    return post, np.sqrt(post_var), {"tau2_between": tau_b, "tau2_within": tau_w, "mean": mu}


def level_fit(
    learner: BaseUpliftLearner,
    X: NDArray[np.floating[Any]],
    y: NDArray[np.float64],
    labels: NDArray[Any],
    weights: NDArray[np.float64] | None = None,
    groups: Mapping[str, str] | None = None,
    shrink: bool = True,
    strata: Sequence[Any] | NDArray[Any] | None = None,
) -> LevelFit:
    """Per treatment (``learner.treatments_`` order): regression-adjusted ATT, shrunk (when
    ``shrink``) toward its group (``groups``: treatment -> group, e.g. offer -> kind; missing:
    its own group) and the mean of all; the shift is the target minus the mean predicted effect
    on that treatment's rows of ``X`` (see the module docstring).

    ``X``, ``y``, ``labels`` (and optional row ``weights``) are the learner's training rows.
    ``strata`` (each row's campaign, or None): the ATT is measured within each campaign
    against that campaign's own control rows and combined over campaigns with a
    between-campaign variance (:func:`campaign_att`); None: against the baseline alone, with
    the treated rows' noise as its standard error.
    """
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    baseline = control_baseline(learner, X, y, labels, w)
    # each treated row's own treatment only: the means below use nothing else
    own = learner.columns_of(labels)
    own[own == ALL_COLUMNS] = NO_COLUMN
    effects = learner.predict_selected(X, own)
    k = len(learner.treatments_)
    missing = [str(t) for t in learner.treatments_ if not np.any(labels == t)]
    if missing:
        raise ValueError(f"level_fit: no rows of treatment(s) {missing}")
    campaign_info: dict[str, float] = {}
    if strata is not None:
        if len(strata) != len(y):
            raise ValueError(f"strata has {len(strata)} entries for {len(y)} rows")
        treated_effect = np.full(len(y), np.nan)
        for j, treatment in enumerate(learner.treatments_):
            rows = labels == treatment
            treated_effect[rows] = effects[rows, j]
        residual = y - baseline(X)
        att, se, mean_pred, campaign_info = campaign_att(
            residual, w, labels, learner.treatments_, learner.control, strata, treated_effect
        )
    else:
        att, se, mean_pred = np.zeros(k), np.zeros(k), np.zeros(k)
        for j, treatment in enumerate(learner.treatments_):
            rows = labels == treatment
            r, wr = y[rows] - baseline(X[rows]), w[rows]
            att[j] = np.average(r, weights=wr)
            # standard error of a weighted mean (floored: a constant residual is not certainty)
            var = float(np.sum(wr**2 * (r - att[j]) ** 2) / np.sum(wr) ** 2)
            se[j] = max(np.sqrt(var), 1e-9)
            mean_pred[j] = np.average(effects[rows, j], weights=wr)
    names = tuple(str(t) for t in learner.treatments_)
    if shrink and k > 1:
        grp = [str((groups or {}).get(t, t)) for t in names] if groups else None
        shrunk, shrunk_se, info = shrink_effects(att, se, grp)
    else:
        shrunk, shrunk_se, info = att.copy(), se.copy(), {}
    info = {**info, **campaign_info}
    shifts = shrunk - mean_pred
    log.info(
        "level: raw ATT %s -> shrunk %s",
        dict(zip(names, np.round(att, 4), strict=True)),
        dict(zip(names, np.round(shrunk, 4), strict=True)),
    )
    return LevelFit(names, att, se, shrunk, shrunk_se, shifts, info, baseline)


def _mean_and_var(r: NDArray[np.float64], w: NDArray[np.float64]) -> tuple[float, float, float]:
    """Weighted mean of ``r``, the residual variance, and the design factor
    ``sum(w^2) / sum(w)^2`` (the variance of the mean is variance x factor)."""
    sw = float(w.sum())
    m = float(w @ r) / sw
    var = float(w @ (r - m) ** 2) / sw
    return m, var, float(w @ w) / sw**2


def campaign_att(
    residual: NDArray[np.float64],
    weights: NDArray[np.float64],
    labels: NDArray[Any],
    treatments: Sequence[Any],
    control: Any,
    strata: Sequence[Any] | NDArray[Any],
    treated_effect: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], dict[str, float]]:
    """Per treatment: the ATT measured campaign by campaign, its standard error, and the mean
    of ``treated_effect`` (each treated row's predicted effect of its own treatment) with the
    same weights; plus the between-campaign variance (``tau2_campaign``) and its statistics.

    Every logged campaign is its own randomised test: in campaign ``c`` a treatment's effect is
    ``d = mean(residual | treated, c) - mean(residual | control, c)``, with variance
    ``v = var_t / n_t + var_c / n_c`` (weighted: times the design factor). Measured so, a
    campaign whose members spent more than the baseline predicts (season, channel) does not
    read as an effect, and the control group's noise is in the standard error. A campaign with
    fewer than 2 control rows (or none named: None / NaN) is compared with every control row.
    A cell with one treated row takes its treatment's residual variance over all its rows.

    The campaigns' estimates of one treatment differ by more than their noise when its effect
    differs between campaigns (members targeted, channel, time); the next send is another
    campaign, so that variance is part of the error: one ``tau2`` is estimated from every
    treatment's campaigns at once (DerSimonian-Laird, pooled over treatments, since most
    treatments ran in 1-3 campaigns), and each treatment's ATT is the mean of its campaigns
    weighted by ``1 / (v + tau2)``, with standard error ``sqrt(1 / sum of those weights)``:
    a treatment seen in one campaign carries that campaign's variance whole.
    """
    r = np.asarray(residual, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    lab = np.asarray(labels, dtype=object)
    keys = np.array(
        ["" if (s is None or (isinstance(s, float) and np.isnan(s))) else str(s) for s in strata],
        dtype=object,
    )
    if not (len(r) == len(w) == len(lab) == len(keys)):
        raise ValueError(
            f"residual, weights, labels and strata must have one length; got {len(r)}, "
            f"{len(w)}, {len(lab)}, {len(keys)}"
        )
    eff = np.zeros(len(r)) if treated_effect is None else np.asarray(treated_effect, float)
    is_control = lab == control
    if is_control.sum() < 2:
        raise ValueError(f"campaign_att: fewer than 2 rows of the control {control!r}")
    m_all, var_all, f_all = _mean_and_var(r[is_control], w[is_control])
    reference: dict[str, tuple[float, float]] = {}
    for key in np.unique(keys[is_control]):
        sel = is_control & (keys == key)
        if key and sel.sum() >= 2:
            m, var, f = _mean_and_var(r[sel], w[sel])
            reference[key] = (m, var * f)
    pooled = (m_all, var_all * f_all)
    cells: list[tuple[int, float, float, float]] = []  # (treatment, d, v, mean effect)
    for j, treatment in enumerate(treatments):
        rows = lab == treatment
        if not rows.any():
            raise ValueError(f"campaign_att: no rows of treatment {treatment!r}")
        _, var_j, _ = _mean_and_var(r[rows], w[rows])
        for key in np.unique(keys[rows]):
            sel = rows & (keys == key)
            m, var, f = _mean_and_var(r[sel], w[sel])
            if sel.sum() < 2:
                var = var_j
            m_ref, v_ref = reference.get(key, pooled)
            v_cell = max(var * f + v_ref, 1e-18)
            cells.append((j, m - m_ref, v_cell, float(np.average(eff[sel], weights=w[sel]))))
    k = len(treatments)
    tj = np.array([c[0] for c in cells], dtype=np.int64)
    d = np.array([c[1] for c in cells])
    v = np.array([c[2] for c in cells])
    e = np.array([c[3] for c in cells])
    n_cells = np.bincount(tj, minlength=k)
    # the fixed-effect mean of each treatment, then DerSimonian-Laird pooled over treatments
    wf = 1.0 / v
    fe = np.bincount(tj, weights=wf * d, minlength=k) / np.bincount(tj, weights=wf, minlength=k)
    q = float(np.sum(wf * (d - fe[tj]) ** 2))
    df = int(np.sum(n_cells - 1))
    s1 = np.bincount(tj, weights=wf, minlength=k)
    s2 = np.bincount(tj, weights=wf**2, minlength=k)
    denom = float(np.sum(s1 - s2 / s1))
    tau2 = max(0.0, (q - df) / denom) if df > 0 and denom > 0 else 0.0
    wr = 1.0 / (v + tau2)
    sw = np.bincount(tj, weights=wr, minlength=k)
    att = np.bincount(tj, weights=wr * d, minlength=k) / sw
    mean_effect = np.bincount(tj, weights=wr * e, minlength=k) / sw
    se = np.maximum(np.sqrt(1.0 / sw), 1e-9)
    info = {
        "tau2_campaign": tau2,
        "q_campaign": q,
        "df_campaign": float(df),
        "cells_campaign": float(len(cells)),
    }
    return att, se, mean_effect, info


def control_baseline(
    learner: BaseUpliftLearner,
    X: NDArray[np.floating[Any]],
    y: NDArray[np.float64],
    labels: NDArray[Any],
    weights: NDArray[np.float64] | None = None,
) -> Callable[[NDArray[np.floating[Any]]], NDArray[np.float64]]:
    """The outcome without treatment, ``f0(x)``: the learner's base model fitted on the control
    rows of ``X``/``y`` (a probability for a binary learner)."""
    control = labels == learner.control
    if not control.any():
        raise ValueError(f"control_baseline: no rows of the control {learner.control!r}")
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    binary = learner.outcome_ == "binary"
    f0 = make_base_estimator(
        learner.base_learner,
        "classifier" if binary else "regressor",
        learner.base_params,
        learner.random_state,
    )
    f0.fit(X[control], y[control], sample_weight=w[control])

    def baseline(Z: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        return f0.predict_proba(Z)[:, 1] if binary else f0.predict(Z)

    return baseline


@dataclasses.dataclass
class _SlopeSums:
    """The slope's sums over one side (treated or control rows): numerator, denominator and
    the (deviation, residual) pieces."""

    num: float = 0.0
    den: float = 0.0
    pieces: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = dataclasses.field(
        default_factory=list
    )


def heterogeneity_slope(
    learner: BaseUpliftLearner,
    baseline: Any,
    X: NDArray[np.floating[Any]],
    y: NDArray[np.float64],
    labels: NDArray[Any],
    effects: NDArray[np.float64] | None = None,
) -> tuple[float, float]:
    """Out-of-sample slope (and its standard error) of the effect on the learner's predicted
    deviation from each treatment's mean, pooled over treatments: the slope of
    ``y - baseline(X)`` on the deviation among a treatment's rows minus the same slope among
    the control rows (what the deviation explains of the outcome without treatment, e.g. an
    imperfect baseline, is not effect). 1: the deviations are right on average; 0: they carry
    nothing. (0, inf) when the deviations are all zero.

    ``effects``: the learner's effects on ``X`` when already predicted; only each treated
    row's own treatment and every treatment on control rows are read (others may be NaN, as
    ``learner.predict_selected(X, learner.columns_of(labels))`` gives, which is used when
    ``effects`` is None)."""
    if effects is None:
        effects = learner.predict_selected(X, learner.columns_of(labels))
    control = labels == learner.control
    r_all = y - baseline(X)
    sums = {True: _SlopeSums(), False: _SlopeSums()}
    for j, treatment in enumerate(learner.treatments_):
        rows = labels == treatment
        if rows.sum() < 2 or control.sum() < 2:
            continue
        both = rows | control
        d = effects[:, j] - effects[both, j].mean()
        for treated, sel in ((True, rows), (False, control)):
            dj, rj = d[sel], r_all[sel] - r_all[sel].mean()
            acc = sums[treated]
            acc.num += float(dj @ rj)
            acc.den += float(dj @ dj)
            acc.pieces.append((dj, rj))
    if sums[True].den <= 1e-12 or sums[False].den <= 1e-12:
        return 0.0, float("inf")
    beta, var = 0.0, 0.0
    for treated, sign in ((True, 1.0), (False, -1.0)):
        num, den, pieces = sums[treated].num, sums[treated].den, sums[treated].pieces
        b = num / den
        d = np.concatenate([p[0] for p in pieces])
        r = np.concatenate([p[1] for p in pieces])
        beta += sign * b
        var += float(np.sum(d**2 * (r - b * d) ** 2)) / den**2
    return float(beta), float(np.sqrt(var))


def apply_scale(
    learner: BaseUpliftLearner, scale: float, centre: NDArray[np.float64]
) -> BaseUpliftLearner:
    """Scale every treatment's effects around ``centre`` (per treatment) by ``scale``:
    ``centre + scale x (effect - centre)``, folded into the readout; returns the learner."""
    if not (np.isfinite(scale) and 0 <= scale <= 1):
        raise ValueError(f"scale must lie in [0, 1]; got {scale}")
    c = np.asarray(centre, dtype=np.float64)
    r = learner.readout_
    if c.shape != r.intercept.shape:
        raise ValueError(f"centre must have shape {r.intercept.shape}; got {c.shape}")
    learner.readout_ = dataclasses.replace(
        r, weights=r.weights * scale, intercept=scale * r.intercept + (1 - scale) * c
    )
    return learner


def level_shifts(
    learner: BaseUpliftLearner,
    X: NDArray[np.floating[Any]],
    y: NDArray[np.float64],
    labels: NDArray[Any],
    weights: NDArray[np.float64] | None = None,
    groups: Mapping[str, str] | None = None,
    shrink: bool = True,
    strata: Sequence[Any] | NDArray[Any] | None = None,
) -> NDArray[np.float64]:
    """The shifts of :func:`level_fit` (per treatment, the learner's order)."""
    return level_fit(learner, X, y, labels, weights, groups, shrink, strata).shifts


def apply_shifts(learner: BaseUpliftLearner, shifts: NDArray[np.float64]) -> BaseUpliftLearner:
    """Add ``shifts`` to the learner's effects (its readout intercept); returns the learner."""
    shifts = np.asarray(shifts, dtype=np.float64)
    if shifts.shape != learner.readout_.intercept.shape:
        raise ValueError(
            f"shifts must have shape {learner.readout_.intercept.shape}; got {shifts.shape}"
        )
    learner.readout_ = dataclasses.replace(
        learner.readout_, intercept=learner.readout_.intercept + shifts
    )
    return learner
