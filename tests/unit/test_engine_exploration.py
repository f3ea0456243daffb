"""Exploration: mixture propensities sum to 1, empirical frequencies match them."""

from __future__ import annotations

import numpy as np
import pytest

from serving.engine.exploration import explore, slot_probabilities


def keys(n: int, request: str = "cmp") -> np.ndarray:
    return np.array([f"{request}|m{i}" for i in range(n)], dtype=object)


def test_slot_probabilities_sum_to_one_over_candidates():
    cand = np.array([[1, 1, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    greedy = np.array([3, 1, -1])
    p = slot_probabilities(greedy, cand, 0.1)
    assert p[0].tolist() == pytest.approx([0.1 / 3, 0.1 / 3, 0.0, 0.9 + 0.1 / 3])
    assert p[1].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])
    assert p.sum(axis=1).tolist() == pytest.approx([1.0, 1.0, 0.1])  # no greedy: 1 - eps empty
    assert (p[~cand] == 0).all()


def test_greedy_only_without_exploration():
    cand = np.ones((50, 5), dtype=bool)
    greedy = np.tile([2, 0, -1], (50, 1))
    s = explore(greedy, cand, np.arange(5), 1, np.full(50, 3), 0.0, keys(50), "salt")
    assert (s.offers == greedy).all()
    assert np.allclose(s.propensity[:, :2], 1.0) and np.isnan(s.propensity[:, 2]).all()
    assert not s.explored.any()


def test_empirical_frequencies_match_the_logged_propensity():
    n, m, eps = 40_000, 4, 0.2
    cand = np.ones((n, m), dtype=bool)
    cand[:, 3] = False  # not eligible: never shown
    greedy = np.full((n, 1), 1)
    s = explore(greedy, cand, np.arange(m), 1, np.ones(n, int), eps, keys(n), "salt")
    shown = s.offers[:, 0]
    freq = np.bincount(shown, minlength=m) / n
    want = slot_probabilities(greedy[:, 0], cand, eps)[0]
    assert want.tolist() == pytest.approx([eps / 3, 1 - eps + eps / 3, eps / 3, 0.0])
    sd = np.sqrt(want * (1 - want) / n)
    assert (np.abs(freq - want) <= 4 * sd + 1e-12).all()
    # each row logs the probability of what it showed
    assert np.allclose(s.propensity[:, 0], want[shown])
    assert abs(s.explored.mean() - eps) < 4 * np.sqrt(eps * (1 - eps) / n)


def test_draws_are_deterministic_per_request_and_member():
    cand = np.ones((2000, 6), dtype=bool)
    greedy = np.zeros((2000, 2), dtype=np.int64)
    greedy[:, 1] = 1
    args = (cand, np.arange(6), 1, np.full(2000, 2), 0.5)
    a = explore(greedy, *args, keys(2000, "r1"), "salt")
    b = explore(greedy, *args, keys(2000, "r1"), "salt")
    c = explore(greedy, *args, keys(2000, "r2"), "salt")
    assert (a.offers == b.offers).all() and np.array_equal(a.propensity, b.propensity)
    assert (a.offers != c.offers).any()


def test_slots_never_repeat_an_offer_or_exceed_the_kind_cap():
    n = 5000
    kind = np.array([0, 0, 1, 1, 2, 2])
    cand = np.ones((n, 6), dtype=bool)
    greedy = np.tile([0, 2, 4], (n, 1))
    s = explore(greedy, cand, kind, 1, np.full(n, 3), 0.5, keys(n), "salt")
    shown = s.offers
    assert (shown >= 0).all()
    assert all(len(set(row)) == 3 for row in shown.tolist())
    assert all(len(set(kind[row])) == 3 for row in shown.tolist())
    # later slots have fewer candidates and the propensity is over those
    assert (s.n_candidates[:, 0] == 6).all() and (s.n_candidates[:, 2] == 2).all()
    explored_third = s.explored[:, 2]
    assert np.all(s.propensity[explored_third, 2] >= 0.5 / 2 - 1e-12)


def test_exploration_can_fill_a_slot_the_greedy_left_empty():
    n, eps = 20_000, 0.1
    cand = np.ones((n, 3), dtype=bool)
    greedy = np.full((n, 1), -1)
    s = explore(greedy, cand, np.arange(3), 1, np.ones(n, int), eps, keys(n), "salt")
    filled = s.offers[:, 0] >= 0
    assert abs(filled.mean() - eps) < 4 * np.sqrt(eps * (1 - eps) / n)
    assert np.allclose(s.propensity[filled, 0], eps / 3)
