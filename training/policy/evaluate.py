"""Policy evaluation on a simulated program, where the true effects are known.

Two questions, answered for the engine and three baselines over the *same* members, channel,
k, eligibility and budgets:

1. **A send now** (:func:`evaluate_send`): each policy chooses up to k offers per member; the
   simulator's truth (``training.policy.truth``) gives, for every (member, offer) sent, the
   true P(redeem) and the true incremental spend over the effect window. Per policy::

       true_incremental_value = sum over sends of  margin_rate x true incremental spend
                                                   - true P(redeem) x cost
       spend                  = sum over sends of  true P(redeem) x cost     (expected cost)
       redemptions            = sum over sends of  true P(redeem)

   Policies: ``engine`` (the decision engine on the models' outputs), ``affinity_top_k``
   (the k eligible offers with the highest affinity, nothing about incrementality or cost),
   ``random`` (k eligible offers uniformly at random) and ``oracle`` (the allocation on the
   *true* expected incremental value: an upper reference). Every policy respects the same
   budgets (the allocation's repair pass with the models' P(redeem) as budget base) and the
   same diversity rule. With k > 1 the truth adds the offers' effects (the simulator defines
   one send at a time).

2. **Off-policy estimates from the logged campaigns** (:func:`off_policy_estimates`): the
   simulator's past campaigns logged a uniformly random offer (or the control group) with its
   propensity. For each policy, the value per decision of following it on those logged
   contexts is estimated with IPS, self-normalised IPS and doubly robust estimators, as the
   incremental value over sending nothing (same estimator for both), next to its true value
   on the same contexts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from serving.engine.allocation import Budgets, allocate, budget_cut
from serving.engine.context import DecisionContext
from serving.engine.engine import DecisionBatch, DecisionEngine, Prepared
from serving.engine.exploration import explore
from serving.engine.fallback import FallbackTables
from serving.engine.scoring import ScoreInputs
from serving.engine.state import MemberOfferState

__all__ = [
    "POLICIES",
    "LoggedDecisions",
    "allocate_as_engine",
    "baseline_picks",
    "engine_picks",
    "evaluate_send",
    "off_policy_estimates",
    "one_hot",
    "ope_estimate",
    "summary",
    "truth_of_picks",
]

log = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = ("engine", "affinity_top_k", "random", "oracle")


def engine_picks(batch: DecisionBatch) -> np.ndarray:
    """The (n, slots) picks of a batch from :meth:`DecisionEngine.decide` (which always sets
    them); a batch without picks is refused by name."""
    if batch.picks is None:
        raise ValueError("DecisionBatch.picks is None: not a batch from DecisionEngine.decide")
    return batch.picks


def truth_of_picks(
    picks: np.ndarray,
    true_p: np.ndarray,
    true_s: np.ndarray,
    cost: np.ndarray,
    margin_rate: float,
) -> dict[str, float]:
    """True value, spend, redemptions and sends of a send (``picks``: (n, K) offer indices)."""
    i, r = np.nonzero(picks >= 0)
    j = picks[i, r]
    p, s, c = true_p[i, j], true_s[i, j], cost[j]
    value = margin_rate * s - p * c
    return {
        "true_incremental_value": float(value.sum()),
        "spend": float((p * c).sum()),
        "redemptions": float(p.sum()),
        "true_incremental_spend": float(s.sum()),
        "sends": len(j),
        "members_reached": len(np.unique(i)),
        "value_per_send": float(value.mean()) if len(j) else 0.0,
    }


def allocate_as_engine(
    engine: DecisionEngine,
    prepared: Prepared,
    value: np.ndarray,
    base: np.ndarray,
    k: int,
    spend: float | None = None,
) -> np.ndarray:
    """Picks of the engine's allocator on ``value`` (members x offers, dtype as given) with
    the engine's eligibility, slots, diversity and the send's budgets on ``base``; with
    ``spend``, one more budget: a total expected cost (``base`` x cost) of at most ``spend``.
    Affinity top-k and the oracles (at the engine's spend; the observable one) choose this way."""
    o, st = engine.offers, engine.settings
    budgets = prepared.budgets
    if spend is not None:
        budgets = Budgets(
            np.vstack([budgets.weights, o.cost[None, :]]),
            np.r_[budgets.limits, max(spend, 0.0)],
            (*budgets.names, "matched_spend"),
        )
    return allocate(
        value, base, prepared.mask, prepared.slots, o.kind, budgets,
        max_per_kind=st.max_per_kind, k=k, min_value=0.0, max_iter=st.allocation.max_iter,
        tolerance=st.allocation.tolerance, chunk_rows=st.allocation.chunk_rows,
    ).picks  # fmt: skip


def _keep_budgets(picks: np.ndarray, order: np.ndarray, base: np.ndarray, b: Budgets) -> np.ndarray:
    if b.n == 0:
        return picks
    rows = np.arange(len(picks))[:, None]
    spend = np.where(picks >= 0, base[rows, np.maximum(picks, 0)], 0.0).astype(np.float64)
    keep = budget_cut(picks, order, spend, b.weights, b.limits)
    return np.where(keep, picks, -1)


def baseline_picks(
    engine: DecisionEngine,
    prepared: Prepared,
    affinity_score: np.ndarray,
    true_eiv: np.ndarray,
    keys: np.ndarray,
    k: int,
) -> dict[str, np.ndarray]:
    """Picks of ``affinity_top_k``, ``random`` and ``oracle`` on the engine's eligibility,
    slots, diversity and budgets."""
    st, o, pr = engine.settings, engine.offers, prepared

    # Affinity only: always fills the slots (a rank, not a value), budgets by price on it.
    score = np.asarray(affinity_score, dtype=np.float32)
    shifted = score - np.nanmin(score) + np.float32(1.0)
    top_k = allocate_as_engine(engine, pr, shifted, pr.base, k)
    oracle = allocate_as_engine(engine, pr, np.asarray(true_eiv, np.float32), pr.base, k)
    none = np.full((pr.mask.shape[0], k), -1, dtype=np.int64)
    rnd = explore(none, pr.mask, o.kind, st.max_per_kind, pr.slots, 1.0, keys, "random-policy")
    random_picks = _keep_budgets(rnd.offers, np.zeros(rnd.offers.shape), pr.base, pr.budgets)
    return {"affinity_top_k": top_k, "random": random_picks, "oracle": oracle}


@dataclass
class LoggedDecisions:
    """Logged contexts of past campaigns: the arm taken and what happened.

    ``action``: offer index or -1 for the control group (nothing sent); ``propensity``: the
    logged probability of that arm; ``reward``: margin_rate x spend in the window minus
    cost x redeemed (no cost for control rows).
    """

    action: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.action)
        if len(self.propensity) != n or len(self.reward) != n:
            raise ValueError("logged decisions: action, propensity and reward lengths differ")
        if not ((self.propensity > 0) & (self.propensity <= 1)).all():
            raise ValueError("logged decisions: propensities must lie in (0, 1]")


def _with_none(prob: np.ndarray) -> np.ndarray:
    """Append the probability of "nothing" (1 - row sum) as the last column."""
    rest = np.clip(1.0 - prob.sum(axis=1), 0.0, 1.0)
    return np.column_stack([prob, rest])


def ope_estimate(
    logged: LoggedDecisions, target: np.ndarray, q_hat: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-row terms of IPS and DR and the weights (``target``, ``q_hat``: (n, m + 1), the
    last column being "nothing")."""
    n, m1 = target.shape
    col = np.where(logged.action >= 0, logged.action, m1 - 1)
    rows = np.arange(n)
    w = target[rows, col] / logged.propensity
    ips = w * logged.reward
    dr = (target * q_hat).sum(axis=1) + w * (logged.reward - q_hat[rows, col])
    return {"w": w, "ips": ips, "dr": dr}


def off_policy_estimates(
    logged: LoggedDecisions,
    policies: dict[str, np.ndarray],
    q_hat: np.ndarray,
    true_value: np.ndarray,
) -> dict[str, dict[str, float]]:
    """IPS, self-normalised IPS and DR estimates of each policy's incremental value per
    decision (over sending nothing), with standard errors, next to the truth.

    ``policies``: name -> (n, m) probability of each offer per context (rows sum to <= 1; the
    rest is "nothing"); ``q_hat``: (n, m + 1) modelled reward per action (last: nothing);
    ``true_value``: (n, m) true incremental value of each offer at each context.
    """
    n, m = true_value.shape
    nothing = np.zeros((n, m + 1))
    nothing[:, -1] = 1.0
    base = ope_estimate(logged, nothing, q_hat)
    out: dict[str, dict[str, float]] = {}
    for name, prob in policies.items():
        target = _with_none(prob)
        est = ope_estimate(logged, target, q_hat)
        d_ips = est["ips"] - base["ips"]
        d_dr = est["dr"] - base["dr"]
        snips = _snips(est["w"], logged.reward) - _snips(base["w"], logged.reward)
        truth = (prob * true_value).sum(axis=1)
        out[name] = {
            "truth": float(truth.mean()),
            "ips": float(d_ips.mean()),
            "ips_se": float(d_ips.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            "snips": float(snips),
            "dr": float(d_dr.mean()),
            "dr_se": float(d_dr.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            "matched_share": float((est["w"] > 0).mean()),
        }
    return out


def _snips(w: np.ndarray, r: np.ndarray) -> float:
    total = w.sum()
    return float((w * r).sum() / total) if total > 0 else float("nan")


def one_hot(picks: np.ndarray, m: int) -> np.ndarray:
    """(n, m) probability matrix of a deterministic single pick per row (-1: nothing)."""
    prob = np.zeros((len(picks), m))
    has = picks >= 0
    prob[np.flatnonzero(has), picks[has]] = 1.0
    return prob


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Engine against affinity top-k: value and spend ratios (None when undefined)."""
    eng, top = results.get("engine"), results.get("affinity_top_k")
    if not eng or not top:
        return {}
    tv, ts = top["true_incremental_value"], top["spend"]
    return {
        "value_ratio": (eng["true_incremental_value"] / tv) if tv > 0 else None,
        "spend_ratio": (eng["spend"] / ts) if ts > 0 else None,
        "goal": "engine value >= 1.2 x affinity_top_k at equal or lower spend",
        "goal_met": bool(
            eng["true_incremental_value"] >= (1.2 * tv if tv > 0 else max(tv, 0.0) + 1e-12)
            and eng["spend"] <= ts * 1.0001
        ),
    }


def evaluate_send(
    engine: DecisionEngine,
    members: pd.DataFrame,
    inputs: ScoreInputs,
    context: DecisionContext,
    affinity_score: np.ndarray,
    true_p: np.ndarray,
    true_s: np.ndarray,
    state: MemberOfferState | None = None,
    budget_left: np.ndarray | None = None,
    fallback_tables: FallbackTables | None = None,
    match_spend: bool = False,
) -> tuple[dict[str, dict[str, Any]], DecisionBatch]:
    """Every policy's true value for one send (see the module docstring).

    ``match_spend``: give the engine a total budget equal to affinity top-k's expected cost
    under the models' P(redeem), so it cannot win by spending more.
    """
    st, o = engine.settings, engine.offers
    k = context.k or st.k
    args = (members, inputs, context, state, budget_left, fallback_tables)
    pr = engine.prepare(*args)
    margin = st.scoring.margin_rate
    true_eiv = margin * true_s - true_p * o.cost[None, :]
    keys = np.asarray([f"{context.request_id}|{m}" for m in pr.members.ids], dtype=object)
    picks = baseline_picks(engine, pr, affinity_score, true_eiv, keys, k)
    total = None
    if match_spend:
        top = picks["affinity_top_k"]
        i, r = np.nonzero(top >= 0)
        total = float((pr.scores.p_redeem[i, top[i, r]] * o.cost[top[i, r]]).sum())
    batch = engine.decide(*args, total_money=total)
    results = {"engine": truth_of_picks(engine_picks(batch), true_p, true_s, o.cost, margin)}
    for name, pk in picks.items():
        results[name] = truth_of_picks(pk, true_p, true_s, o.cost, margin)
    if total is not None:
        results["engine"]["total_budget"] = total
    return {name: results[name] for name in POLICIES}, batch
