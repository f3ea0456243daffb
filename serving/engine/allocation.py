"""Budget-aware allocation of a whole send: Lagrangian prices per budget, then a repair pass.

Problem. Members i, offers j, value ``v[i, j]`` (the ranking score), ``x[i, j]`` in {0, 1}::

    maximise    sum_ij x_ij v_ij
    subject to  x_ij = 0 where not allowed; sum_j x_ij <= slots_i;
                at most ``max_per_kind`` offers of one kind per member;
                for every budget c:  sum_ij x_ij base_ij W[c, j] <= B[c]

``base`` is P(redeem) (budgets spent by expected redemptions) or 1 (every send spends, the
worst case); ``W[c, j]`` is 1 (count budget of offer j), ``cost_j`` (money budget of offer j, or a
total money budget over several offers) or 0.

Method. Relax the budgets with a price ``lambda_c >= 0`` each. For given prices the problem splits
per member: take the best ``slots_i`` offers by ``v_ij - base_ij sum_c lambda_c W[c, j]`` that are
above ``min_value``, respecting diversity (:func:`greedy_slate`, vectorised over members). A
budget's usage falls as its price rises, so each price is found by bisection, all budgets at
once (a price whose budget is overspent at its upper bracket gets its bracket doubled, which
handles the coupling between budgets). Members are processed in chunks, so memory stays bounded
at millions of members. Bisection stops when every budget is within ``tolerance`` of full or has
price 0. Finally a **repair pass** guarantees that no budget is exceeded: per budget, picks are
kept in decreasing order of price-adjusted value while the budget lasts; members who lost a pick
get their next best offer that still fits (``repair_rounds`` refills).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from serving.engine.errors import EngineInputError

__all__ = [
    "Allocation",
    "Budgets",
    "allocate",
    "budget_cut",
    "greedy_one",
    "greedy_slate",
    "repair",
]

log = logging.getLogger(__name__)
NEG = np.float32(-np.inf)


@dataclass(frozen=True)
class Budgets:
    """``weights`` (C, m) and ``limits`` (C,): budget c is ``sum x base W[c] <= limits[c]``."""

    weights: np.ndarray
    limits: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weights), np.asarray(self.limits)
        if w.ndim != 2 or b.shape != (w.shape[0],) or len(self.names) != w.shape[0]:
            raise EngineInputError(
                f"budgets: weights {w.shape}, limits {b.shape}, {len(self.names)} names"
            )
        if (w < 0).any() or np.isnan(b).any() or (b < 0).any():
            raise EngineInputError("budgets: weights and limits must be >= 0 and not nan")

    @classmethod
    def none(cls, n_offers: int) -> Budgets:
        return cls(np.zeros((0, n_offers)), np.zeros(0), ())

    @property
    def n(self) -> int:
        return len(self.limits)


@dataclass
class Allocation:
    """Picks per member (offer indices, best first, -1 pads) and the prices that chose them."""

    picks: np.ndarray  # (n, K) int
    prices: np.ndarray  # (C,) lambda per budget
    usage: np.ndarray  # (C,) what the final picks spend
    iterations: int
    repaired: int  # picks dropped by the repair pass
    refilled: int  # picks added by the refill rounds


def offer_prices(prices: np.ndarray, budgets: Budgets) -> np.ndarray:
    """Price per unit of base for each offer: ``sum_c lambda_c W[c, j]``."""
    if budgets.n == 0:
        return np.zeros(budgets.weights.shape[1], dtype=np.float32)
    return (np.asarray(prices, dtype=np.float64) @ budgets.weights).astype(np.float32)


def greedy_slate(
    value: np.ndarray,
    allowed: np.ndarray,
    slots: np.ndarray,
    kind: np.ndarray,
    max_per_kind: int,
    k: int,
    min_value: float = 0.0,
    kind_count: np.ndarray | None = None,
) -> np.ndarray:
    """Best ``slots_i`` (at most ``k``) allowed offers per row with value above ``min_value``,
    at most ``max_per_kind`` per kind (``kind_count``: kinds already used per row)."""
    n = value.shape[0]
    s = np.where(allowed & (value > min_value), value, NEG).astype(np.float32, copy=False)
    picks = np.full((n, k), -1, dtype=np.int64)
    n_kinds = int(kind.max()) + 1 if len(kind) else 1
    counts = np.zeros((n, n_kinds), dtype=np.int32) if kind_count is None else kind_count.copy()
    if kind_count is not None:  # kinds already full
        full = counts[:, kind] >= max_per_kind
        s[full] = NEG
    rows = np.arange(n)
    for r in range(k):
        j = np.argmax(s, axis=1)
        best = s[rows, j]
        ok = np.isfinite(best) & (slots > r)
        if not ok.any():
            break
        picks[ok, r] = j[ok]
        s[rows[ok], j[ok]] = NEG
        kj = kind[j]
        counts[rows[ok], kj[ok]] += 1
        full = ok & (counts[rows, kj] >= max_per_kind)
        if full.any():  # the picked kind is full: mask its offers in place (no row copies)
            np.putmask(s, full[:, None] & (kind[None, :] == kj[:, None]), NEG)
    return picks


def _usage(picks: np.ndarray, base: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(C,) spend of the picks: sum over picks of base[i, j] W[:, j]."""
    i, r = np.nonzero(picks >= 0)
    j = picks[i, r]
    per_offer = np.bincount(j, weights=base[i, j].astype(np.float64), minlength=weights.shape[1])
    return weights @ per_offer


def allocate(
    value: np.ndarray,
    base: np.ndarray,
    allowed: np.ndarray,
    slots: np.ndarray,
    kind: np.ndarray,
    budgets: Budgets,
    max_per_kind: int = 1,
    k: int = 1,
    min_value: float = 0.0,
    max_iter: int = 40,
    tolerance: float = 1e-3,
    chunk_rows: int = 250_000,
    repair_rounds: int = 3,
    prices: np.ndarray | None = None,
    kind_count: np.ndarray | None = None,
) -> Allocation:
    """Choose each member's offers under the budgets (see the module docstring).

    ``prices``: use these fixed prices instead of solving (e.g. the prices of the last batch
    send, so a real-time decision matches the batch); the repair pass still applies.
    """
    n, m = value.shape
    for name, arr in (("base", base), ("allowed", allowed)):
        if arr.shape != (n, m):
            raise EngineInputError(f"allocation: {name} has shape {arr.shape}, expected {(n, m)}")
    if budgets.weights.shape[1] != m:
        raise EngineInputError(
            f"allocation: budgets cover {budgets.weights.shape[1]} offers, not {m}"
        )
    W = np.asarray(budgets.weights, dtype=np.float64)
    B = np.asarray(budgets.limits, dtype=np.float64)
    C = len(B)

    def solve(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unit = offer_prices(lam, budgets)
        picks = np.empty((n, k), dtype=np.int64)
        for a in range(0, n, chunk_rows):
            sl = slice(a, a + chunk_rows)
            adj = value[sl] - base[sl] * unit[None, :]
            kc = None if kind_count is None else kind_count[sl]
            picks[sl] = greedy_slate(
                adj, allowed[sl], slots[sl], kind, max_per_kind, k, min_value, kc
            )
        return picks, _usage(picks, base, W)

    lam = np.zeros(C) if prices is None else np.asarray(prices, dtype=np.float64).copy()
    picks, use = solve(lam)
    it = 1
    candidates = [(lam, picks)]
    if prices is None and C and (use > B).any():
        lam, lo, picks, use, it = _bisect(
            solve, lam, picks, use, B, value, base, W, max_iter, tolerance
        )
        candidates = [(lam, picks)]
        # A budget left under-used at a positive price (discrete jumps, e.g. many members with
        # the same value) is also tried on the over-spending side of its bracket, where the
        # repair pass keeps what fits in order of value; the better of the two is kept.
        under = (lam > 0) & (use < B * (1 - tolerance)) & (lo < lam)
        if under.any():
            low = np.where(under, lo, lam)
            candidates.append((low, solve(low)[0]))
            it += 1
    best = None
    for cand_lam, cand_picks in candidates:
        unit = offer_prices(cand_lam, budgets)
        fixed, dropped, added = repair(
            cand_picks.copy(), value, base, allowed, slots, kind, budgets, unit,
            max_per_kind, min_value, repair_rounds, kind_count,
        )  # fmt: skip
        total = _total(fixed, value)
        if best is None or total > best[0] + 1e-9:
            best = (total, cand_lam, fixed, dropped, added)
    if best is None:  # candidates holds at least the solved prices
        raise RuntimeError("allocate: no candidate prices were evaluated")
    _, lam, picks, dropped, added = best
    use = _usage(picks, base, W) if C else np.zeros(0)
    log.debug("allocation: %d iterations, prices %s, usage %s of %s", it, lam, use, B)
    return Allocation(picks, lam, use, it, dropped, added)


def _bisect(solve, lam, picks, use, B, value, base, W, max_iter, tolerance, bracket_tol=1e-4):
    """Simultaneous bisection of every budget's price (see the module docstring).

    Stops when every budget is done (within ``tolerance`` of full, or unused at price 0), when
    the brackets of the others are narrower than ``bracket_tol`` (relative), or at ``max_iter``.
    """
    C = len(B)
    lo, hi = np.zeros(C), np.full(C, np.inf)
    ceiling = _price_ceiling(value, base, W)
    it = 1
    while True:
        over = use > B
        done = ~over & ((lam == 0) | (use >= B * (1 - tolerance)))
        if done.all() or it >= max_iter:
            break
        # Over budget: the price must rise; the bracket is stale if it does not lie above.
        lo = np.where(over, lam, lo)
        stale_hi = over & (~np.isfinite(hi) | (hi <= lam))
        hi = np.where(stale_hi, np.maximum(2 * lam, ceiling), hi)
        # Under budget: the price may fall; the bracket is stale if it does not lie below.
        hi = np.where(~over, lam, hi)
        lo = np.where(~over & (lo >= lam), lam / 2, lo)
        new = np.where(over | (lam > 0), (lo + hi) / 2, 0.0)
        if np.all(done | (hi - lo <= bracket_tol * np.maximum(hi, 1e-12))):
            break
        lam = new
        picks, use = solve(lam)
        it += 1
    return lam, lo, picks, use, it


def _total(picks: np.ndarray, value: np.ndarray) -> float:
    i, r = np.nonzero(picks >= 0)
    return float(value[i, picks[i, r]].astype(np.float64).sum())


def _price_ceiling(value: np.ndarray, base: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Per budget, a price at which no offer it covers is worth taking on its own."""
    with np.errstate(divide="ignore", invalid="ignore"):
        best = np.nanmax(np.where(base > 0, value / base, 0), axis=0)  # (m,)
    best = np.maximum(np.nan_to_num(best, nan=0.0, posinf=0.0), 0)
    out = np.zeros(W.shape[0])
    for c in range(W.shape[0]):
        cover = W[c] > 0
        if cover.any():
            out[c] = float(np.max(best[cover] / W[c, cover]))
    return np.maximum(out, 1e-6)


def budget_cut(
    picks: np.ndarray,
    order_value: np.ndarray,
    spend: np.ndarray,
    W: np.ndarray,
    room: np.ndarray,
) -> np.ndarray:
    """Keep mask over (i, r) picks: per budget, in decreasing value, while room lasts."""
    keep = picks >= 0
    for c in range(W.shape[0]):
        cover = keep & (W[c][np.maximum(picks, 0)] > 0)
        if not cover.any():
            continue
        i, r = np.nonzero(cover)
        cost = spend[i, r] * W[c][picks[i, r]]
        order = np.argsort(-order_value[i, r], kind="stable")
        fits = np.cumsum(cost[order]) <= room[c] * (1 + 1e-12) + 1e-9
        drop = order[~fits]
        keep[i[drop], r[drop]] = False
    return keep


def repair(
    picks: np.ndarray,
    value: np.ndarray,
    base: np.ndarray,
    allowed: np.ndarray,
    slots: np.ndarray,
    kind: np.ndarray,
    budgets: Budgets,
    unit_price: np.ndarray,
    max_per_kind: int,
    min_value: float,
    rounds: int,
    kind_count: np.ndarray | None = None,
) -> tuple[np.ndarray, int, int]:
    """Drop picks until no budget is exceeded, then refill freed slots where budgets allow.

    Returns the picks (best first per member), the number dropped and the number added.
    """
    if budgets.n == 0:
        return picks, 0, 0
    W = np.asarray(budgets.weights, dtype=np.float64)
    B = np.asarray(budgets.limits, dtype=np.float64)
    n, k = picks.shape
    rows = np.arange(n)[:, None]
    safe = np.maximum(picks, 0)
    spend = np.where(picks >= 0, base[rows, safe], 0.0).astype(np.float64)
    adj = np.where(picks >= 0, value[rows, safe] - spend * unit_price[safe], -np.inf)
    keep = budget_cut(picks, adj, spend, W, B)
    dropped = int(((picks >= 0) & ~keep).sum())
    picks = np.where(keep, picks, -1)
    added = 0
    for _ in range(rounds if dropped else 0):
        used = _usage(picks, base, W)
        room = B - used
        has_room = np.all((W <= 0) | (room[:, None] > 1e-9), axis=0)  # (m,) offers that fit
        free = slots - (picks >= 0).sum(axis=1)
        cand_rows = np.flatnonzero(free > 0)
        if not len(cand_rows) or not has_room.any():
            break
        sub = picks[cand_rows]
        taken = np.zeros((len(cand_rows), value.shape[1]), dtype=bool)
        i, r = np.nonzero(sub >= 0)
        taken[i, sub[i, r]] = True
        n_kinds = int(kind.max()) + 1
        counts = (
            np.zeros((len(cand_rows), n_kinds), dtype=np.int32)
            if kind_count is None
            else kind_count[cand_rows].copy()
        )
        np.add.at(counts, (i, kind[sub[i, r]]), 1)
        adj_sub = value[cand_rows] - base[cand_rows] * unit_price[None, :]
        ok = allowed[cand_rows] & ~taken & has_room[None, :]
        new = greedy_slate(adj_sub, ok, free[cand_rows], kind, max_per_kind, k, min_value, counts)
        new_spend = np.where(new >= 0, base[cand_rows[:, None], np.maximum(new, 0)], 0.0)
        sub_rows = np.arange(len(cand_rows))[:, None]
        new_adj = np.where(new >= 0, adj_sub[sub_rows, np.maximum(new, 0)], -np.inf)
        keep_new = budget_cut(new, new_adj, new_spend, W, room)
        new = np.where(keep_new, new, -1)
        n_new = int((new >= 0).sum())
        if n_new == 0:
            break
        added += n_new
        picks[cand_rows] = _merge(sub, new)
    picks = _sort_by(picks, value)
    return picks, dropped, added


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: the valid entries of ``a`` then those of ``b``, -1 padded to a's width."""
    both = np.concatenate([a, b], axis=1)
    order = np.argsort(both < 0, axis=1, kind="stable")
    return np.take_along_axis(both, order, axis=1)[:, : a.shape[1]]


def _sort_by(picks: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Each row's picks in decreasing ``value`` (padding last)."""
    rows = np.arange(len(picks))[:, None]
    v = np.where(picks >= 0, value[rows, np.maximum(picks, 0)], -np.inf)
    order = np.argsort(-v, axis=1, kind="stable")
    return np.take_along_axis(picks, order, axis=1)


def greedy_one(
    rank: np.ndarray,
    allowed: np.ndarray,
    kind: np.ndarray,
    max_per_kind: int,
    kind_count: np.ndarray,
    k: int,
    min_value: float,
) -> list[int]:
    """:func:`greedy_slate` for ONE member at prices 0 (the real-time path): up to ``k`` offer
    indices, best ``rank`` first, among ``allowed`` offers whose rank is above ``min_value``,
    at most ``max_per_kind`` per kind counting ``kind_count`` (kinds already shown)."""
    picks: list[int] = []
    if k <= 0:
        return picks
    val = np.where(allowed & (rank > min_value), rank, -np.inf).astype(np.float32)
    counts = kind_count.copy()
    val[counts[kind] >= max_per_kind] = -np.inf
    for _ in range(k):
        j = int(np.argmax(val))
        if not np.isfinite(val[j]):
            break
        picks.append(j)
        val[j] = -np.inf
        counts[kind[j]] += 1
        if counts[kind[j]] >= max_per_kind:
            val[kind == kind[j]] = -np.inf
    return picks
