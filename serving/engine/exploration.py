"""Exploration: per slot, with probability epsilon, a uniform pick among the eligible offers.

Slots are filled in order. At slot r the *candidates* are the member's eligible regular offers
not already shown in an earlier slot and still allowed by the diversity rule and the budgets;
the *greedy* offer is the allocation's best remaining pick that is a candidate (possibly none).
A deterministic draw (hash of request id, member id and slot; see ``serving.engine.hashing``)
decides: with probability ``epsilon`` the slot shows a uniformly drawn candidate, otherwise the
greedy offer. The recorded propensity of the shown offer ``o`` is the full mixture

    P(o) = (1 - epsilon) x 1[o is greedy] + epsilon / n_candidates

which sums to 1 over the candidates whenever there is a greedy offer (with none, the slot stays
empty with probability 1 - epsilon). It is the probability of ``o`` at that slot given the
earlier slots; a slate's probability is the product over its slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from serving.engine.hashing import EncodedTexts, unit_interval, unit_one

__all__ = ["Slate", "explore", "explore_one", "slot_probabilities"]


@dataclass
class Slate:
    """Shown offers per member and slot (-1: empty) with how each was chosen."""

    offers: np.ndarray  # (n, K) int
    propensity: np.ndarray  # (n, K) float, nan for empty slots
    explored: np.ndarray  # (n, K) bool
    n_candidates: np.ndarray  # (n, K) int


def slot_probabilities(greedy: np.ndarray, candidates: np.ndarray, epsilon: float) -> np.ndarray:
    """(n, m) probability of each offer at one slot: ``epsilon`` spread uniformly over the
    candidates plus ``1 - epsilon`` on the greedy offer (-1: none). Rows with a greedy offer
    sum to 1; rows without one sum to ``epsilon`` (the rest is "nothing shown")."""
    nc = candidates.sum(axis=1)
    prob = np.where(candidates, epsilon / np.maximum(nc, 1)[:, None], 0.0)
    has = greedy >= 0
    prob[np.flatnonzero(has), greedy[has]] += 1 - epsilon
    return prob


def _draws(keys: np.ndarray | EncodedTexts, salt: str, slot: int) -> tuple[np.ndarray, np.ndarray]:
    coin = unit_interval(keys, f"{salt}/coin/{slot}")
    pick = unit_interval(keys, f"{salt}/pick/{slot}")
    return coin, pick


def explore(
    greedy: np.ndarray,
    candidates: np.ndarray,
    kind: np.ndarray,
    max_per_kind: int,
    slots: np.ndarray,
    epsilon: float,
    keys: np.ndarray | EncodedTexts,
    salt: str,
    kind_count: np.ndarray | None = None,
    first_slot: int = 0,
) -> Slate:
    """Fill ``slots_i`` slots per member from the allocation's ``greedy`` picks (n, K, best
    first) and the eligible ``candidates`` (n, m), exploring with probability ``epsilon``.

    ``kind_count`` (n, n_kinds): kinds already shown (e.g. by a surprise); ``first_slot``
    numbers the slots for the draws (so a surprise in slot 0 does not shift them).
    """
    n, K = greedy.shape
    m = candidates.shape[1]
    rows = np.arange(n)
    n_kinds = max(int(kind.max()) + 1 if len(kind) else 1, 1)
    counts = np.zeros((n, n_kinds), np.int32) if kind_count is None else kind_count.copy()
    shown = np.full((n, K), -1, dtype=np.int64)
    prop = np.full((n, K), np.nan)
    explored = np.zeros((n, K), dtype=bool)
    n_cand = np.zeros((n, K), dtype=np.int64)
    used = np.zeros((n, m), dtype=bool)
    for r in range(K):
        active = slots > r
        cand = candidates & ~used & (counts[:, kind] < max_per_kind) & active[:, None]
        # greedy: the first allocated pick that is still a candidate
        g = np.full(n, -1, dtype=np.int64)
        for q in range(K):
            gq = greedy[:, q]
            ok = (g < 0) & (gq >= 0) & cand[rows, np.maximum(gq, 0)]
            g[ok] = gq[ok]
        nc = cand.sum(axis=1)
        pos = np.zeros(n, dtype=np.int64)
        if epsilon > 0:
            coin, u = _draws(keys, salt, first_slot + r)
            go = (coin < epsilon) & (nc > 0)
            sub = np.flatnonzero(go)  # only the exploring rows need their drawn candidate
            target = np.floor(u[sub] * nc[sub]).astype(np.int64)  # the target-th (0-based)
            pos[sub] = np.argmax(np.cumsum(cand[sub], axis=1) > target[:, None], axis=1)
        else:
            go = np.zeros(n, dtype=bool)
        o = np.where(go, pos, g)
        has = o >= 0
        # slot_probabilities(g, cand, epsilon)[rows, o], for the shown offer only
        safe = np.maximum(o, 0)
        p = np.where(cand[rows, safe], epsilon / np.maximum(nc, 1), 0.0)
        p = np.where((g >= 0) & (g == o), p + (1 - epsilon), p)
        shown[has, r] = o[has]
        prop[has, r] = p[has]
        explored[:, r] = go
        n_cand[:, r] = nc
        used[rows[has], o[has]] = True
        counts[rows[has], kind[o[has]]] += 1
    return Slate(shown, prop, explored, n_cand)


def explore_one(
    greedy: list[int],
    candidates: np.ndarray,
    kind: np.ndarray,
    max_per_kind: int,
    slots: int,
    epsilon: float,
    key: str,
    salt: str,
    kind_count: np.ndarray,
) -> tuple[list[int], list[float], list[bool], list[int]]:
    """:func:`explore` for ONE member (the real-time path): per slot ``0..K-1`` (``K`` =
    ``max(len(greedy), 1)``), the shown offer (-1: none), its propensity (nan: none), whether
    it was explored and the number of candidates; the same draws (hash of ``key``)."""
    K = max(len(greedy), 1)
    counts = kind_count.copy()
    used = np.zeros(len(candidates), dtype=bool)
    shown: list[int] = []
    prop: list[float] = []
    expl: list[bool] = []
    ncand: list[int] = []
    for r in range(K):
        cand = candidates & ~used & (counts[kind] < max_per_kind) & (slots > r)
        g = next((q for q in greedy if q >= 0 and cand[q]), -1)
        nc = int(cand.sum())
        go, pick = False, -1
        if epsilon > 0 and nc > 0:
            go = unit_one(key, f"{salt}/coin/{r}") < epsilon
            if go:
                target = math.floor(unit_one(key, f"{salt}/pick/{r}") * nc)
                pick = int(np.flatnonzero(cand)[target])
        choice = pick if go else g
        shown.append(choice)
        expl.append(go)
        ncand.append(nc)
        if choice >= 0:
            p = (epsilon / max(nc, 1) if cand[choice] else 0.0) + (
                1 - epsilon if g >= 0 and choice == g else 0.0
            )
            prop.append(p)
            used[choice] = True
            counts[kind[choice]] += 1
        else:
            prop.append(math.nan)
    return shown, prop, expl, ncand
