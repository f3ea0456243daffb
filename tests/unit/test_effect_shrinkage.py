"""Empirical-Bayes shrinkage of per-treatment effects and per-offer P(redeem) offsets."""

from __future__ import annotations

import numpy as np
import pytest

from models.affinity.calibration import RedeemCalibrator
from training.uplift.calibration import shrink_effects


def test_noise_only_estimates_shrink_to_the_precision_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    se = np.full(40, 2.0)
    att = 0.3 + rng.normal(0, 2.0, 40)  # one true effect, pure noise around it
    post, post_se, info = shrink_effects(att, se)
    assert info["tau2_within"] < 0.5
    assert np.ptp(post) < 0.5 * np.ptp(att)
    assert abs(post.mean() - att.mean()) < 1e-9 + 0.5  # pulled to the mean, not elsewhere
    assert (post_se < se).all()  # pooling adds information


def test_precise_estimates_keep_their_own_value() -> None:
    att = np.array([-1.0, 0.0, 2.0, 5.0])
    post, _, _ = shrink_effects(att, np.full(4, 1e-3))
    np.testing.assert_allclose(post, att, atol=1e-3)


def test_each_estimate_shrinks_toward_its_group() -> None:
    rng = np.random.default_rng(1)
    groups = ["a"] * 20 + ["b"] * 20
    truth = np.r_[np.full(20, -2.0), np.full(20, 3.0)]
    se = np.full(40, 1.0)
    att = truth + rng.normal(0, 1.0, 40)
    post, _, info = shrink_effects(att, se, groups)
    assert info["tau2_between"] > 1.0
    np.testing.assert_allclose(post[:20].mean(), -2.0, atol=0.6)
    np.testing.assert_allclose(post[20:].mean(), 3.0, atol=0.6)
    # closer to the truth than the raw estimates
    assert np.mean((post - truth) ** 2) < np.mean((att - truth) ** 2)


@pytest.mark.parametrize(
    ("att", "se", "message"),
    [
        ([1.0, 2.0], [1.0], "one length"),
        ([1.0, np.nan], [1.0, 1.0], "finite"),
        ([1.0], [0.0], "> 0"),
    ],
)
def test_bad_input_is_named(att: list[float], se: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shrink_effects(att, se)


def test_per_offer_offsets_recover_each_offers_rate() -> None:
    rng = np.random.default_rng(2)
    n = 4000
    scores = rng.normal(size=2 * n)
    groups = np.r_[np.full(n, "offer:a"), np.full(n, "offer:b")]
    rate = np.r_[np.full(n, 0.40), np.full(n, 0.01)]
    labels = (rng.random(2 * n) < rate).astype(float)
    for method in ("isotonic", "platt"):
        cal = RedeemCalibrator(method).fit(scores, labels, groups=groups)
        p = cal.predict(scores, groups)
        assert abs(p[:n].mean() - 0.40) < 0.03
        assert abs(p[n:].mean() - 0.01) < 0.01
        plain = cal.predict(scores)  # no groups: the one map for all (~0.2)
        assert abs(plain.mean() - labels.mean()) < 0.03
        unseen = cal.predict(scores[:5], np.full(5, "offer:new"))
        np.testing.assert_allclose(unseen, plain[:5])
        back = RedeemCalibrator.from_arrays(cal.to_arrays())
        np.testing.assert_allclose(back.predict(scores, groups), p)


def test_a_rarely_seen_offer_moves_little() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=2010)
    groups = np.r_[np.full(2000, "offer:many"), np.full(10, "offer:few")]
    labels = np.r_[(rng.random(2000) < 0.1).astype(float), np.ones(10)]  # few: 10 of 10
    cal = RedeemCalibrator("platt", prior_pairs=50).fit(scores, labels, groups=groups)
    few = cal.predict(scores[-10:], groups[-10:]).mean()
    assert 0.15 < few < 0.5  # 10/10 observed, pulled most of the way back toward ~0.1


def test_offsets_need_one_group_per_pair() -> None:
    with pytest.raises(Exception, match="groups: 1 groups for 2 scores"):
        RedeemCalibrator().fit(np.array([0.0, 1.0]), np.array([0.0, 1.0]), groups=np.array(["a"]))


def _heterogeneous(seed: int, real: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 6000
    X = rng.normal(size=(n, 3))
    arm = np.where(rng.random(n) < 0.5, "a", "control").astype(object)
    effect = 2.0 * X[:, 0] if real else np.full(n, 0.5)
    y = X[:, 1] + np.where(arm == "a", effect, 0.0) + rng.normal(0, 1.0, n)
    return X, y, arm


@pytest.mark.parametrize(("real", "lo", "hi"), [(True, 0.8, 1.3), (False, -0.5, 0.5)])
def test_heterogeneity_slope_is_one_for_real_variation_and_zero_for_noise(
    real: bool, lo: float, hi: float
) -> None:
    from models.uplift import SLearner
    from training.uplift.calibration import apply_scale, heterogeneity_slope, level_fit

    X, y, arm = _heterogeneous(0, real)
    tr, te = slice(0, 3000), slice(3000, None)
    params = {"n_estimators": 40, "learning_rate": 0.1, "min_child_samples": 30}
    model = SLearner(base_params=params, control="control", outcome="continuous")
    model.fit(X[tr], y[tr], arm[tr])
    fit = level_fit(model, X[tr], y[tr], arm[tr])
    slope, se = heterogeneity_slope(model, fit.baseline, X[te], y[te], arm[te])
    assert lo < slope < hi and se < 0.3  # noise case: slope -0.03 +- 0.21 (seed 0)
    before = model.predict(X[te])[:, 0]
    apply_scale(model, 0.25, np.array([0.5]))
    after = model.predict(X[te])[:, 0]
    np.testing.assert_allclose(after, 0.5 + 0.25 * (before - 0.5), atol=1e-9)
    with pytest.raises(ValueError, match="scale must lie in"):
        apply_scale(model, 1.5, np.array([0.5]))


def test_offers_the_pairs_did_not_cover_take_their_own_logged_rate() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=2000)
    labels = (rng.random(2000) < 0.05).astype(float)
    groups = np.full(2000, "offer:seen")
    cal = RedeemCalibrator("platt", prior_pairs=50).fit(scores, labels, groups=groups)
    seen_offset = float(cal.offsets_for(np.array(["offer:seen"]))[0])
    cal.add_rates(
        np.array(["offer:seen", "offer:hist", "offer:none"]),
        sends=np.array([100.0, 1000.0, 0.0]),
        redemptions=np.array([90.0, 280.0, 0.0]),
        reference=0.05,
    )
    # a group fitted on pairs keeps its offset; one with history gets its rate; none: no offset
    assert float(cal.offsets_for(np.array(["offer:seen"]))[0]) == pytest.approx(seen_offset)
    p_hist = cal.predict(np.zeros(1), np.array(["offer:hist"]))[0]
    assert abs(p_hist / cal.predict(np.zeros(1))[0] - 0.27 / 0.05) < 1.5  # ~ its 0.28 rate
    assert cal.offsets_for(np.array(["offer:none"]))[0] == 0.0
    back = RedeemCalibrator.from_arrays(cal.to_arrays())
    assert back.predict(np.zeros(1), np.array(["offer:hist"]))[0] == pytest.approx(p_hist)
    with pytest.raises(Exception, match="redemptions <= sends"):
        cal.add_rates(np.array(["offer:x"]), np.array([1.0]), np.array([2.0]), reference=0.05)


def test_two_estimates_are_not_pooled() -> None:
    # a variance cannot be estimated from two numbers: Hillstrom's two e-mails keep their own
    post, post_se, info = shrink_effects([0.2, 0.6], [0.15, 0.15])
    np.testing.assert_allclose(post, [0.2, 0.6])
    np.testing.assert_allclose(post_se, [0.15, 0.15])
    assert info["tau2_within"] == float("inf")
