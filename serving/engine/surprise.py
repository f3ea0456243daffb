"""Surprise rewards: at most one per decision, for a member in a detected moment.

Among the member's eligible surprise offers (eligibility already checks the moment, the yearly
cap and "never the previous surprise"), the engine takes the one with the highest expected
incremental value per unit of expected cost, if its value is above ``surprise.min_value``.
Over a whole send the surprise budget (money, spent by expected cost) and the offers' own
budgets are shared: members keep their surprise in decreasing order of value per cost while
the budgets last.
"""

from __future__ import annotations

import numpy as np

from serving.engine.allocation import Budgets

__all__ = ["pick_surprise_one", "pick_surprises"]


def pick_surprises(
    eiv: np.ndarray,
    expected_cost: np.ndarray,
    eligible: np.ndarray,
    is_surprise: np.ndarray,
    min_value: float,
    surprise_budget: float | None,
    budgets: Budgets,
    base: np.ndarray,
) -> np.ndarray:
    """Offer index of each member's surprise (-1: none)."""
    n = eiv.shape[0]
    ok = eligible & is_surprise[None, :] & (eiv > min_value)
    if not ok.any():
        return np.full(n, -1, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Zero-cost surprises have an unbounded ratio: they come first, by value.
        ratio = np.where(expected_cost > 0, eiv / expected_cost, np.inf)
    key = np.where(ok, ratio, -np.inf)
    j = np.argmax(key, axis=1)
    rows = np.arange(n)
    has = ok[rows, j]
    pick = np.where(has, j, -1)
    # Share the budgets in decreasing value per cost (ties: higher value first).
    i = np.flatnonzero(has)
    jj = pick[i]
    order = np.lexsort((-eiv[i, jj], -key[i, jj]))
    i, jj = i[order], jj[order]
    keep = np.ones(len(i), dtype=bool)
    if surprise_budget is not None:
        keep &= np.cumsum(expected_cost[i, jj].astype(np.float64)) <= surprise_budget + 1e-9
    spend = base[i, jj].astype(np.float64)
    for c in range(budgets.n):
        w = budgets.weights[c][jj]
        cover = keep & (w > 0)
        use = np.cumsum(np.where(cover, spend * w, 0.0))
        keep &= ~cover | (use <= budgets.limits[c] + 1e-9)
    pick[i[~keep]] = -1
    return pick


def pick_surprise_one(
    eiv: np.ndarray,
    expected_cost: np.ndarray,
    eligible: np.ndarray,
    is_surprise: np.ndarray,
    min_value: float,
    surprise_budget: float | None,
    budgets: Budgets,
    base: np.ndarray,
) -> int:
    """:func:`pick_surprises` for ONE member (1-d rows): the surprise's offer index or -1."""
    ok = eligible & is_surprise & (eiv > min_value)
    if not ok.any():
        return -1
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(expected_cost > 0, eiv / expected_cost, np.inf)
    j = int(np.argmax(np.where(ok, ratio, -np.inf)))
    if surprise_budget is not None and float(expected_cost[j]) > surprise_budget + 1e-9:
        return -1
    if budgets.n:
        w = budgets.weights[:, j]
        if not np.all((w <= 0) | (float(base[j]) * w <= budgets.limits + 1e-9)):
            return -1
    return j
