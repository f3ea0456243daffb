"""Surprise-moment detectors: known answers at and around every threshold; nulls never fire."""

from __future__ import annotations

import numpy as np
import pytest

from serving.engine.members import MemberTable
from serving.engine.moments import DETECTED_MOMENTS, detect_moments
from serving.engine.settings import MomentSettings
from tests.support.engine import member, members


def fired(name, *rows, settings=None):
    mt = MemberTable.from_frame(members(*rows))
    return detect_moments(mt, settings or MomentSettings()).of(name).tolist()


def test_quiet_member_has_no_moment():
    mt = MemberTable.from_frame(members(member()))
    assert not detect_moments(mt, MomentSettings()).flags.any()
    assert len(DETECTED_MOMENTS) == 8


def test_birthday_window_before_and_after():
    rows = [member(days_to_birthday=d) for d in (0, 14, 15, 361, 362, 365, None)]
    assert fired("birthday", *rows) == [True, True, False, False, True, True, False]
    narrow = MomentSettings(birthday_days_before=3, birthday_days_after=0)
    assert fired("birthday", *rows, settings=narrow) == [
        True,
        False,
        False,
        False,
        False,
        False,
        False,
    ]


def test_anniversary_needs_tenure():
    rows = [
        member(days_to_anniversary=14, tenure_days=400.0),
        member(days_to_anniversary=15, tenure_days=400.0),
        member(days_to_anniversary=3, tenure_days=200.0),
    ]
    assert fired("anniversary", *rows) == [True, False, False]


def test_tier_nudge_share_and_points_cap_and_basket():
    rows = [
        member(points_tier_window=1200.0, points_to_next_tier=300.0),  # 300 <= 0.2 x 1500
        member(points_tier_window=1100.0, points_to_next_tier=400.0),  # 400 > 0.2 x 1500
        member(points_tier_window=4000.0, points_to_next_tier=None),  # top tier
        member(points_to_next_tier=700.0, basket_reaches_next_tier=True),
    ]
    assert fired("tier_nudge", *rows) == [True, False, False, True]
    capped = MomentSettings(tier_nudge_max_points=250)
    assert fired("tier_nudge", *rows, settings=capped) == [False, False, False, True]


def test_onboarding_milestones():
    rows = [
        member(tenure_days=3.0, n_purchases_total=0),  # welcome week
        member(tenure_days=20.0, n_purchases_total=1),  # first purchase
        member(tenure_days=20.0, n_purchases_total=2),
        member(tenure_days=30.0, n_purchases_total=3),
        member(tenure_days=90.0, n_purchases_total=1),  # no longer onboarding
    ]
    assert fired("onboarding", *rows) == [True, True, False, True, False]


def test_lapse_risk():
    rows = [member(days_since_last_purchase=d) for d in (39.0, 40.0, 365.0, 366.0, None)]
    assert fired("win_back", *rows) == [False, True, True, False, False]


def test_purchase_milestone_and_streak():
    rows = [
        member(purchases_to_next_milestone=1, purchase_streak_weeks=4),
        member(purchases_to_next_milestone=2, purchase_streak_weeks=3),
        member(purchases_to_next_milestone=9, basket_is_milestone=True),
    ]
    assert fired("milestone", *rows) == [True, False, True]
    assert fired("streak", *rows) == [True, False, False]


def test_large_basket_only_with_a_basket():
    rows = [
        member(avg_basket=25.0, basket_total=50.0),
        member(avg_basket=25.0, basket_total=49.99),
        member(avg_basket=10.0, basket_total=25.0),  # 2.5x but below the 30 minimum
        member(avg_basket=25.0),  # no basket (e-mail)
    ]
    assert fired("large_basket", *rows) == [True, False, False, False]


def test_settings_validate_thresholds():
    with pytest.raises(ValueError, match="lapse_max_days"):
        MomentSettings(lapse_risk_days=50, lapse_max_days=40)
    mt = MemberTable.from_frame(members(member(days_to_birthday=2), member()))
    flags = detect_moments(mt, MomentSettings()).flags
    assert flags.dtype == np.bool_ and flags.shape == (2, len(DETECTED_MOMENTS))


def test_basket_moments_of_one_member_equal_the_vectorised_detectors():
    from serving.api.bundle.member_rows import with_basket
    from serving.engine.moments import basket_moments

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(200):
        rows.append(
            member(
                avg_basket=rng.choice([np.nan, 5.0, 20.0, 60.0]),
                points_to_next_tier=rng.choice([np.nan, 0.0, 10.0, 45.0, 700.0]),
                purchases_to_next_milestone=rng.choice([np.nan, 0, 1, 2]),
            )
        )
    table = MemberTable.from_frame(members(*rows))
    totals = rng.choice([np.nan, 0.0, 12.0, 29.99, 30.0, 45.0, 150.0], size=table.n)
    table = with_basket(table, totals)
    settings = MomentSettings()
    many = basket_moments(table, settings).flags
    assert many.any() and not many.all()
    for i in range(table.n):
        one = basket_moments(table.take(np.array([i])), settings).flags
        assert one.shape == (1, len(DETECTED_MOMENTS))
        assert one[0].tolist() == many[i].tolist(), i
