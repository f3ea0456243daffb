"""Ranking metrics at k, coverage and calibration: hand-computed known answers and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from models.affinity import AffinityInputError, RedeemCalibrator, brier_score, reliability_curve
from models.affinity.base import top_k
from training.affinity.metrics import (
    MetricInputError,
    catalog_coverage,
    hit_matrix,
    ranking_metrics,
)


def rel(rows: list[list[int]], n_items: int = 10) -> sp.csr_matrix:
    r = [i for i, items in enumerate(rows) for _ in items]
    c = [j for items in rows for j in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


def test_hand_computed_member():
    # ranking 3, 1, 4 ; relevant {1, 4, 7}: hits at positions 2 and 3
    m = ranking_metrics(np.array([[3, 1, 4]]), rel([[1, 4, 7]]), ks=(1, 3))
    assert m["precision@1"] == 0 and m["recall@1"] == 0 and m["ndcg@1"] == 0
    assert m["precision@3"] == pytest.approx(2 / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)  # min(3, 3 relevant)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg)
    assert m["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_recall_is_capped_by_k_and_averaged_over_members():
    ranked = np.array([[0, 1], [5, 6]])
    relevant = rel([[0, 1, 2, 3], [9]])
    m = ranking_metrics(ranked, relevant, ks=(2,))
    assert m["recall@2"] == pytest.approx((1.0 + 0.0) / 2)  # 2 of min(2, 4); 0 of 1
    assert m["ndcg@2"] == pytest.approx(0.5)


def test_unknown_relevant_items_count_in_the_denominator():
    # member bought 3 products, only one of them is in the catalogue's columns
    m = ranking_metrics(np.array([[4, 5, 6]]), rel([[4]]), ks=(3,), n_relevant=np.array([3]))
    assert m["recall@3"] == pytest.approx(1 / 3)


def test_padding_is_never_a_hit():
    hits = hit_matrix(np.array([[-1, 0]]), rel([[0]], n_items=1))
    assert hits.tolist() == [[False, True]]


def test_perfect_ranking_scores_one():
    ranked = np.array([[2, 0, 1, 3]])
    m = ranking_metrics(ranked, rel([[2, 0]]), ks=(1, 3))
    assert m["recall@1"] == m["ndcg@3"] == m["map@3"] == m["recall@3"] == 1.0


def test_catalog_coverage():
    ranked = np.array([[0, 1, -1], [1, 2, 3]])
    assert catalog_coverage(ranked, 2, 10) == pytest.approx(3 / 10)
    assert catalog_coverage(ranked, 3, 4) == 1.0


def test_metric_errors_name_the_problem():
    with pytest.raises(MetricInputError, match="without a relevant item"):
        ranking_metrics(np.array([[0]]), rel([[]]), ks=(1,))
    with pytest.raises(MetricInputError, match=r"ks must lie in 1\.\.1"):
        ranking_metrics(np.array([[0]]), rel([[0]]), ks=(2,))
    with pytest.raises(MetricInputError, match="rows for 2 ranked"):
        ranking_metrics(np.array([[0], [1]]), rel([[0]]), ks=(1,))
    with pytest.raises(MetricInputError, match="n_candidates"):
        catalog_coverage(np.array([[0]]), 1, 0)


def test_top_k_pads_and_orders():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]], dtype=np.float32)
    items = np.array([10, 11, 12])
    r = top_k(scores, items, k=4, eligible=np.array([[True, False, True], [True, True, True]]))
    assert r.items.tolist() == [[12, 10, -1, -1], [10, 11, 12, -1]]
    with pytest.raises(AffinityInputError, match="k must be >= 1"):
        top_k(scores, items, k=0)


def test_isotonic_calibration_is_monotone_and_matches_rates():
    scores = np.repeat([0.0, 1.0, 2.0], 100)
    labels = np.concatenate([np.zeros(90), np.ones(10), np.zeros(50), np.ones(50), np.ones(100)])
    cal = RedeemCalibrator("isotonic").fit(scores, labels)
    np.testing.assert_allclose(cal.predict(np.array([0.0, 1.0, 2.0])), [0.1, 0.5, 1.0])
    assert (np.diff(cal.predict(np.linspace(-1, 3, 50))) >= 0).all()
    again = RedeemCalibrator.from_arrays(cal.to_arrays())
    np.testing.assert_allclose(again.predict(scores), cal.predict(scores))


def test_loaded_calibrator_with_an_unknown_method_is_refused_by_name():
    # read back from artifacts: an unknown method was mapped with the Platt formula before
    scores = np.repeat([0.0, 1.0, 2.0], 100)
    labels = np.concatenate([np.zeros(90), np.ones(10), np.zeros(50), np.ones(50), np.ones(100)])
    arrays = RedeemCalibrator("isotonic").fit(scores, labels).to_arrays()
    arrays["method"] = np.array("sigmoid")
    with pytest.raises(
        AffinityInputError, match="method must be 'isotonic' or 'platt', got 'sigmoid'"
    ):
        RedeemCalibrator.from_arrays(arrays)


def test_platt_calibration_increases_with_score():
    rng = np.random.default_rng(0)
    s = rng.normal(size=2000)
    y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-2 * s))).astype(float)
    p = RedeemCalibrator("platt").fit(s, y).predict(np.array([-2.0, 0.0, 2.0]))
    assert p[0] < 0.1 < 0.4 < p[1] < 0.6 < 0.9 < p[2]


def test_brier_and_reliability_known_answers():
    assert brier_score(np.array([0.0, 1.0, 0.5]), np.array([0, 1, 1])) == pytest.approx(0.25 / 3)
    p = np.array([0.1] * 10 + [0.9] * 10)
    y = np.array([0] * 9 + [1] + [1] * 9 + [0])
    mean_p, rate, n = reliability_curve(p, y, bins=2)
    np.testing.assert_allclose(mean_p, [0.1, 0.9])
    np.testing.assert_allclose(rate, [0.1, 0.9])
    assert n.tolist() == [10, 10]


def test_calibration_errors():
    with pytest.raises(AffinityInputError, match="both"):
        RedeemCalibrator().fit(np.array([1.0, 2.0]), np.array([1, 1]))
    with pytest.raises(AffinityInputError, match="0 or 1"):
        RedeemCalibrator().fit(np.array([1.0, 2.0]), np.array([0, 2]))
    with pytest.raises(AffinityInputError, match="not fitted"):
        RedeemCalibrator().predict(np.array([1.0]))
