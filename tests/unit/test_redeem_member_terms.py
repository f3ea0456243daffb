"""The member term of the P(redeem) calibration: member terms from interaction rows, the fitted
slopes on tiny data with a known answer, persistence, and the errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.affinity import RedeemCalibrator
from models.affinity.calibration import (
    MIN_SPAN_DAYS,
    NO_PURCHASE_DAYS,
    member_terms,
    member_terms_row,
)
from models.affinity.interactions import AffinityInputError


def _rows() -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    # items: offer:a, category:x, category:y; three members
    conf = sp.csr_matrix(np.array([[5.0, 2.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]))
    last = sp.csr_matrix(np.array([[2.0, 90.0, 4.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    return conf, last, np.array([False, True, True])


def test_member_terms_known_answer():
    conf, last, purchase = _rows()
    t = member_terms(conf, last, purchase)
    # activity: log(1 + purchase confidence); the offer column does not count
    np.testing.assert_allclose(t[:, 0], np.log1p([3.0, 0.0, 0.0]))
    # recency: the latest purchase item (4 days), not the offer's 2 or 1; none -> 730 days
    np.testing.assert_allclose(t[:, 1], np.log1p([4.0, NO_PURCHASE_DAYS, NO_PURCHASE_DAYS]))
    # span: the oldest of the purchase items' latest purchases; none -> 0
    np.testing.assert_allclose(t[:, 2], [90.0, 0.0, 0.0])


def test_member_terms_row_equals_the_matrix_form():
    conf, last, purchase = _rows()
    t = member_terms(conf, last, purchase)
    for i in range(3):
        c, d = conf[i].toarray().ravel(), last[i].toarray().ravel()
        row = member_terms_row(
            {j: float(c[j]) for j in np.flatnonzero(c)},
            {j: float(d[j]) for j in np.flatnonzero(d)},
            purchase,
        )
        np.testing.assert_allclose(row[0], t[i])


def _pairs(n: int = 20_000, seed: int = 3):
    """Scores that carry nothing, redemption driven by the member's activity: logit p =
    -3 + 0.8 x standardised activity."""
    rng = np.random.default_rng(seed)
    activity = rng.gamma(2.0, 1.0, n)
    recency = rng.uniform(0.0, 5.0, n)
    span = np.full(n, 400.0)
    z = (activity - activity.mean()) / activity.std()
    p = 1.0 / (1.0 + np.exp(-(-3.0 + 0.8 * z)))
    y = (rng.uniform(size=n) < p).astype(float)
    return rng.normal(size=n), y, np.column_stack([activity, recency, span]), p


def test_the_member_slope_is_recovered_and_the_unrelated_one_is_near_zero():
    s, y, m, p = _pairs()
    cal = RedeemCalibrator("platt").fit(s, y, members=m)
    assert cal.uses_members
    _, b_activity, b_recency, *hinges, b_none = cal.member_coef_
    assert cal.member_term_names() == (
        "intercept",
        "activity",
        "recency",
        "recency_past_45d",
        "recency_past_120d",
        "no_purchase",
    )
    assert b_none == 0.0  # every member bought: the indicator has no data, the ridge keeps it 0
    assert b_activity == pytest.approx(0.8, abs=0.1)
    assert abs(b_recency) < 0.06
    # recency (0..5 log-days) carries nothing past either knot: the hinges move no log-odds much
    past = np.maximum(m[:, 1:2] - np.log1p([45.0, 120.0]), 0.0)
    assert np.abs(past @ np.asarray(hinges)).max() < 0.15
    with_terms = cal.predict(s, members=m)
    without = RedeemCalibrator("platt").fit(s, y).predict(s)
    # closer to the true probabilities than the score-only map
    assert np.abs(with_terms - p).mean() < 0.5 * np.abs(without - p).mean()
    # the mean stays calibrated
    assert with_terms.mean() == pytest.approx(y.mean(), abs=0.005)


def test_group_offsets_apply_on_top_of_the_member_term():
    s, y, m, _ = _pairs()
    groups = np.where(np.arange(len(s)) % 2 == 0, "offer:a", "offer:b")
    y = np.where((groups == "offer:b") & (y == 1) & (np.arange(len(s)) % 4 == 1), 0.0, y)
    cal = RedeemCalibrator("platt").fit(s, y, groups=groups, members=m)
    pa = cal.predict(s, groups, m)
    for g in ("offer:a", "offer:b"):
        assert pa[groups == g].mean() == pytest.approx(y[groups == g].mean(), rel=0.1)


def test_2d_scores_take_one_member_row_each():
    s, y, m, _ = _pairs(5_000)
    cal = RedeemCalibrator("isotonic").fit(s, y, members=m)
    scores = np.tile(s[:4, None], (1, 3))
    groups = np.array(["offer:a", "offer:b", "offer:c"])
    got = cal.predict(scores, groups, m[:4])
    for i in range(4):
        np.testing.assert_allclose(got[i], cal.predict(scores[i], groups, m[i : i + 1]))


def test_round_trip_keeps_the_member_term():
    s, y, m, _ = _pairs(5_000)
    cal = RedeemCalibrator("isotonic").fit(s, y, groups=np.full(len(s), "offer:a"), members=m)
    back = RedeemCalibrator.from_arrays(cal.to_arrays())
    np.testing.assert_allclose(
        back.predict(s, np.full(len(s), "offer:a"), m),
        cal.predict(s, np.full(len(s), "offer:a"), m),
    )
    # a calibrator saved before the recency knots (3 coefficients, no knots) predicts as one
    # fitted without knots
    flat = RedeemCalibrator(
        "isotonic", recency_knots=(), no_purchase_term=False, band_offsets=False
    ).fit(s, y, groups=np.full(len(s), "offer:a"), members=m)
    before = {k: v for k, v in flat.to_arrays().items() if k not in ("member_knots", "member_none")}
    assert "band_offsets" not in before
    assert len(before["member_coef"]) == 3
    np.testing.assert_allclose(
        RedeemCalibrator.from_arrays(before).predict(s, np.full(len(s), "offer:a"), m),
        flat.predict(s, np.full(len(s), "offer:a"), m),
    )
    mixed = cal.to_arrays() | {"member_knots": np.empty(0)}
    with pytest.raises(AffinityInputError, match="6 member coefficients for 2 terms, 0 recency"):
        RedeemCalibrator.from_arrays(mixed)
    # an old calibrator (no member arrays) still loads and ignores member terms
    old = {
        k: v
        for k, v in cal.to_arrays().items()
        if not k.startswith("member_") and k != "band_offsets"
    }
    legacy = RedeemCalibrator.from_arrays(old)
    assert not legacy.uses_members
    np.testing.assert_allclose(legacy.predict(s, members=m), legacy.predict(s))


def test_bad_member_terms_are_refused_with_their_shape():
    s, y, m, _ = _pairs(2_000)
    with pytest.raises(AffinityInputError, match=r"members: expected \(2000, 3\).*\(2000, 1\)"):
        RedeemCalibrator().fit(s, y, members=m[:, :1])
    bad = m.copy()
    bad[3, 0] = np.nan
    with pytest.raises(AffinityInputError, match="members: member terms must be finite"):
        RedeemCalibrator().fit(s, y, members=bad)
    cal = RedeemCalibrator().fit(s, y, members=m)
    with pytest.raises(AffinityInputError, match="members: 3 rows for scores of shape"):
        cal.predict(s[:10], members=m[:3])


def test_a_new_member_gets_the_average_members_term():
    s, y, m, _ = _pairs()
    cal = RedeemCalibrator("platt").fit(s, y, members=m)
    new = m[:50].copy()
    new[:, -1] = MIN_SPAN_DAYS - 1  # purchases spanning 59 days: a new member
    new[:, 0] = 0.0  # with little activity, which the slope would read as a rare buyer
    np.testing.assert_allclose(cal.predict(s[:50], members=new), cal.predict(s[:50]))
    old = new.copy()
    old[:, -1] = MIN_SPAN_DAYS
    assert (cal.predict(s[:50], members=old) < cal.predict(s[:50])).all()


def _lapsing_pairs(n: int = 40_000, seed: int = 5):
    """Redemption that falls off a cliff past 120 days without a purchase, as a lapsed member's
    does: logit p = -2.5 - 3 x max(0, log(1 + days) - log(121)); nothing else matters."""
    rng = np.random.default_rng(seed)
    days = np.exp(rng.uniform(np.log(2.0), np.log(700.0), n)) - 1.0
    recency = np.log1p(days)
    activity = rng.gamma(2.0, 1.0, n)
    logit = -2.5 - 3.0 * np.maximum(recency - np.log1p(120.0), 0.0)
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.uniform(size=n) < p).astype(float)
    return rng.normal(size=n), y, np.column_stack([activity, recency, np.full(n, 400.0)]), p, days


def test_recency_knots_price_lapsed_members_where_one_slope_cannot():
    s, y, m, p, days = _lapsing_pairs()
    bent = RedeemCalibrator("platt").fit(s, y, members=m)
    straight = RedeemCalibrator("platt", recency_knots=()).fit(s, y, members=m)
    assert bent.member_coef_[-2] == pytest.approx(-3.0, abs=0.6)  # the 120-day hinge
    lapsed = days > 240.0
    true = p[lapsed].mean()
    # one slope spreads the cliff over every recency: it over-prices the lapsed several-fold
    assert straight.predict(s, members=m)[lapsed].mean() > 1.5 * true
    assert bent.predict(s, members=m)[lapsed].mean() == pytest.approx(true, rel=0.25)
    active = days < 30.0
    assert bent.predict(s, members=m)[active].mean() == pytest.approx(p[active].mean(), rel=0.1)
    back = RedeemCalibrator.from_arrays(bent.to_arrays())
    np.testing.assert_allclose(back.predict(s, members=m), bent.predict(s, members=m))


def test_bad_recency_knots_are_refused_naming_them():
    with pytest.raises(AffinityInputError, match=r"recency_knots: .*\[45.0, -1.0\]"):
        RedeemCalibrator(recency_knots=(45.0, -1.0))


def test_a_member_without_any_purchase_gets_her_own_rate_not_the_average():
    """Members with no purchase in the rows (activity 0, span 0) redeem at 0.004 while the
    others redeem at 0.05: the indicator prices them, a new member with purchases stays the
    average member, and a calibrator without the indicator prices them as the average."""
    rng = np.random.default_rng(11)
    n = 30_000
    none = rng.uniform(size=n) < 0.2
    activity = np.where(none, 0.0, rng.gamma(2.0, 1.0, n) + 0.1)
    recency = np.where(none, np.log1p(NO_PURCHASE_DAYS), rng.uniform(0.5, 3.5, n))
    span = np.where(none, 0.0, 400.0)
    m = np.column_stack([activity, recency, span])
    y = (rng.uniform(size=n) < np.where(none, 0.004, 0.05)).astype(float)
    s = rng.normal(size=n)
    cal = RedeemCalibrator("platt").fit(s, y, members=m)
    assert cal.predict(s, members=m)[none].mean() == pytest.approx(y[none].mean(), rel=0.3)
    assert cal.predict(s, members=m)[~none].mean() == pytest.approx(y[~none].mean(), rel=0.1)
    without = RedeemCalibrator("platt", no_purchase_term=False).fit(s, y, members=m)
    assert without.predict(s, members=m)[none].mean() > 5 * y[none].mean()
    new = m[:5].copy()
    new[:, -1] = 10.0  # purchases spanning 10 days: new, with a purchase
    new[:, 0] = 0.5
    np.testing.assert_allclose(cal.predict(s[:5], members=new), cal.predict(s[:5]))


def _two_offers(n: int = 60_000, seed: int = 7):
    """Offer a is redeemed by 40 % of recent buyers, offer b by 3 %; members past 120 days
    without a purchase redeem either at 0.8 %: how far the rate falls depends on the offer."""
    rng = np.random.default_rng(seed)
    lapsed = rng.uniform(size=n) < 0.3
    days = np.where(lapsed, rng.uniform(150.0, 400.0, n), rng.uniform(1.0, 30.0, n))
    m = np.column_stack([rng.gamma(2.0, 1.0, n) + 0.1, np.log1p(days), np.full(n, 400.0)])
    groups = np.where(rng.uniform(size=n) < 0.5, "offer:a", "offer:b")
    p = np.where(lapsed, 0.008, np.where(groups == "offer:a", 0.4, 0.03))
    y = (rng.uniform(size=n) < p).astype(float)
    return rng.normal(size=n), y, groups, m, lapsed


def test_band_offsets_let_each_offer_fall_by_its_own_amount():
    s, y, groups, m, lapsed = _two_offers()
    banded = RedeemCalibrator("platt", band_offsets=True).fit(s, y, groups=groups, members=m)
    one_gap = RedeemCalibrator("platt").fit(s, y, groups=groups, members=m)
    assert banded.band_offsets_.shape == (2, 3)
    for g, truth in (("offer:a", 0.008), ("offer:b", 0.008)):
        cell = (groups == g) & lapsed
        assert banded.predict(s, groups, m)[cell].mean() == pytest.approx(truth, rel=0.25)
    cell = (groups == "offer:a") & lapsed
    # one member term gives both offers the same log-odds gap: a lapsed member on offer a is
    # priced about twice her rate
    assert one_gap.predict(s, groups, m)[cell].mean() > 1.8 * 0.008
    for g, truth in (("offer:a", 0.4), ("offer:b", 0.03)):
        cell = (groups == g) & ~lapsed
        assert banded.predict(s, groups, m)[cell].mean() == pytest.approx(truth, rel=0.1)
    # 2-d: one member row per row of scores, one group per column, as the pyfunc scores
    grid = np.tile(s[:6, None], (1, 2))
    cols = np.array(["offer:a", "offer:b"])
    got = banded.predict(grid, cols, m[:6])
    for i in range(6):
        np.testing.assert_allclose(got[i], banded.predict(grid[i], cols, m[i : i + 1]))
    back = RedeemCalibrator.from_arrays(banded.to_arrays())
    np.testing.assert_allclose(back.predict(s, groups, m), banded.predict(s, groups, m))
    bad = banded.to_arrays() | {"band_offsets": np.zeros((3, 3))}
    with pytest.raises(
        AffinityInputError, match=r"band offsets of shape \(3, 3\), expected \(2, 3\)"
    ):
        RedeemCalibrator.from_arrays(bad)


def test_groups_added_from_rates_get_no_band_offset_and_keep_the_others_aligned():
    s, y, groups, m, _ = _two_offers(20_000)
    cal = RedeemCalibrator("platt", band_offsets=True).fit(s, y, groups=groups, members=m)
    before = cal.predict(s, groups, m)
    cal.add_rates(np.array(["offer:0"]), np.array([1000.0]), np.array([50.0]), reference=0.05)
    assert cal.groups_.tolist() == ["offer:0", "offer:a", "offer:b"]
    np.testing.assert_allclose(cal.band_offsets_[0], 0.0)
    np.testing.assert_allclose(cal.predict(s, groups, m), before)  # a and b unchanged


def test_bands_known_answer():
    cal = RedeemCalibrator()  # knots 45 and 120 days
    rows = np.array(
        [
            [1.0, np.log1p(10.0), 400.0],  # recent
            [1.0, np.log1p(60.0), 400.0],  # past 45 days
            [1.0, np.log1p(200.0), 400.0],  # past 120 days
            [1.0, np.log1p(200.0), 30.0],  # new: the first band whatever her recency
            [0.0, np.log1p(NO_PURCHASE_DAYS), 0.0],  # no purchase: the last band
        ]
    )
    assert cal.bands(rows).tolist() == [0, 1, 2, 0, 2]
