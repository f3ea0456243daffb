"""The observable oracle's parts (training.policy.bound): known answers on tiny data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.policy.bound import feature_matrix, level_errors, project_on_features


def test_feature_matrix_codes_text_and_booleans_and_drops_the_ids():
    feats = pd.DataFrame(
        {
            "member_id": ["a", "b", "c"],
            "as_of": pd.to_datetime(["2026-01-01"] * 3),
            "spend": [1.5, np.nan, 3.0],
            "tier": ["gold", "silver", "gold"],
            "opt_in": [True, False, True],
        }
    )
    X = feature_matrix(feats)
    assert X.shape == (3, 3) and X.dtype == np.float32
    np.testing.assert_array_equal(X[[0, 2], 0], [1.5, 3.0])
    assert np.isnan(X[1, 0])
    assert X[0, 1] == X[2, 1] != X[1, 1]  # one code per tier
    assert X[0, 2] == X[2, 2] != X[1, 2]


def _members(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def test_a_truth_made_of_the_features_is_recovered_out_of_fold():
    X = _members(3000)
    offers = np.arange(4)
    truth = X[:, [0]] * (offers[None, :] + 1) + np.where(X[:, [1]] > 0, 2.0, 0.0)
    mask = np.ones_like(truth, dtype=bool)
    mask[::7, 1] = False
    proj, r2 = project_on_features(X, mask, truth, trees=200)
    assert r2 > 0.9
    assert np.all(proj[~mask] == 0.0)
    assert np.corrcoef(proj[mask], truth[mask])[0, 1] > 0.95


def test_pure_per_pair_noise_is_not_predictable():
    X = _members(3000)
    truth = np.random.default_rng(1).normal(size=(3000, 4))
    proj, r2 = project_on_features(X, np.ones((3000, 4), dtype=bool), truth, trees=100)
    assert r2 < 0.05  # out of fold: the trees never saw the members they predict
    assert abs(np.corrcoef(proj.ravel(), truth.ravel())[0, 1]) < 0.1


def test_projection_refuses_shapes_that_do_not_match():
    with pytest.raises(ValueError, match=r"X \(3, 2\), mask \(4, 2\)"):
        project_on_features(np.zeros((3, 2)), np.ones((4, 2), bool), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="folds must be >= 2; got 1"):
        project_on_features(np.zeros((4, 2)), np.ones((4, 2), bool), np.zeros((4, 2)), folds=1)


def test_level_errors_known_answer():
    true_s = np.array([[1.0, 5.0, 9.0], [3.0, 7.0, 9.0]])
    se, z = np.array([1.0, 2.0, 0.0]), 2.0
    # point effects: offer 0 at truth + 0.5, offer 1 at truth - 1; offer 2 has no SE (skipped)
    lcb = true_s + np.array([0.5, -1.0, 0.0]) - z * se
    lcb[1, 1] = np.nan  # no effect for this pair: left out, not counted as 0
    mask = np.ones_like(true_s, dtype=bool)
    out = level_errors(lcb, se, z, mask, true_s)
    assert out["offers"] == 2
    assert out["mean_z"] == pytest.approx(0.0)
    assert out["rms_z"] == pytest.approx(0.5)
    assert out["share_z_above_2"] == 0.0
    assert out["rmse"] == pytest.approx(np.sqrt((0.25 + 1.0) / 2))
    assert level_errors(lcb, se, z, np.zeros_like(mask), true_s) == {"offers": 0}
