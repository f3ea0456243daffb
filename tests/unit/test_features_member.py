"""Member features on the tiny hand-made program: every family against hand-computed values.

The program and the arithmetic behind each expected value are in ``tests.support.features``; AS_OF
is Wednesday 2024-06-12 12:00.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from features.pipeline import (
    FeatureInputError,
    load_tables,
    member_features,
    offer_features,
    resolve_categories,
    tables_from_frames,
)
from features.pipeline.config import FeatureConfig, category_slug
from features.sources.io import write_table
from tests.support import features as F

DAY = 86_400


@pytest.fixture(scope="module")
def tables():
    return tables_from_frames(F.frames())


@pytest.fixture(scope="module")
def feats(tables) -> pd.DataFrame:
    return member_features(tables, F.AS_OF).execute().set_index("member_id")


def _row(feats: pd.DataFrame, member: str) -> dict:
    return feats.loc[member].to_dict()


def _check(actual: dict, expected: dict) -> None:
    for name, want in expected.items():
        got = actual[name]
        if want is None:
            assert pd.isna(got), f"{name}: expected null, got {got!r}"
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), f"{name}: {got} != {want}"
        else:
            assert got == want, f"{name}: {got!r} != {want!r}"


def test_population_excludes_members_not_joined_before_as_of(feats):
    # m4 joined exactly at AS_OF, m5 after it.
    assert sorted(feats.index) == ["m1", "m2", "m3", "m6"]
    assert (feats["as_of"] == F.AS_OF).all()


def test_recency_frequency_monetary(feats):
    # m1 visible baskets (age): t2 1 s, t3 7 d, t4 14 d, t5 28 d, t6 72 d, t7 285 d, t8 469 d;
    # t1 sits exactly at AS_OF and t9 after it.
    _check(
        _row(feats, "m1"),
        {
            "days_since_last_purchase": 1 / DAY,
            "days_since_first_purchase": 469.0,
            "n_purchases_total": 7,
            "spend_total": 1770.0,
            "n_purchases_30d": 4,
            "spend_30d": 170.0,
            "n_purchases_90d": 5,
            "spend_90d": 370.0,
            "n_purchases_365d": 6,
            "spend_365d": 770.0,
            "avg_basket": 1770.0 / 7,
        },
    )
    _check(
        _row(feats, "m3"),
        {
            "days_since_last_purchase": 213.125,
            "days_since_first_purchase": 224.125,
            "n_purchases_total": 12,
            "n_purchases_90d": 0,
            "n_purchases_365d": 12,
            "spend_365d": 120.0,
            "avg_basket": 10.0,
        },
    )
    # No purchases: counts and spend are 0, recency and average basket are null.
    _check(
        _row(feats, "m2"),
        {
            "days_since_last_purchase": None,
            "days_since_first_purchase": None,
            "n_purchases_total": 0,
            "spend_total": 0.0,
            "spend_30d": 0.0,
            "avg_basket": None,
        },
    )


def test_tenure_and_lifecycle(feats):
    expected = {
        "m1": (514 + 2 / 24, "active"),
        "m2": (42.5, "onboarding"),  # < 60 days, never bought
        "m3": (834.5, "lapsed"),  # last purchase 213 days ago
        "m6": (1565 + 4 / 24, "lapsing"),  # last purchase exactly 60 days ago
    }
    for member, (tenure, stage) in expected.items():
        _check(_row(feats, member), {"tenure_days": tenure, "lifecycle_stage": stage})


def test_lifecycle_thresholds_are_configurable(tables):
    # m2 (42.5 days a member, never bought) is no longer onboarding and counts as inactive
    # since joining: 42.5 <= 61 -> active.
    config = FeatureConfig(lapsing_days=61, lapsed_days=300, onboarding_days=30)
    df = member_features(tables, F.AS_OF, config).execute().set_index("member_id")
    assert df["lifecycle_stage"].to_dict() == {
        "m1": "active",
        "m2": "active",
        "m3": "lapsing",
        "m6": "active",
    }
    config = FeatureConfig(lapsing_days=20, lapsed_days=40, onboarding_days=30)
    df = member_features(tables, F.AS_OF, config).execute().set_index("member_id")
    assert df.loc["m2", "lifecycle_stage"] == "lapsed"


def test_tier_and_points(feats):
    _check(
        _row(feats, "m1"),
        {
            "points_tier_window": 770.0,
            "tier": "silver",
            "tier_rank": 1,
            "next_tier": "gold",
            "points_to_next_tier": 1400.0 - 770.0,
            "points_balance": 1770.0,
        },
    )
    _check(
        _row(feats, "m2"),
        {
            "points_tier_window": 0.0,
            "tier": "bronze",
            "tier_rank": 0,
            "next_tier": "silver",
            "points_to_next_tier": 500.0,
            "points_balance": 0.0,
        },
    )
    # Top tier: no next tier. Balance adds 100 points per unit of a redeemed bonus_points offer.
    _check(
        _row(feats, "m6"),
        {
            "points_tier_window": 4500.0,
            "tier": "platinum",
            "tier_rank": 3,
            "next_tier": None,
            "points_to_next_tier": None,
            "points_balance": 4500.0 + 2.0 * 100,
        },
    )


def test_tier_points_are_annualised_from_history_start(tables):
    # Data "starts" 2024-01-01: 163.5 days covered at AS_OF, so 770 points count as
    # 770 * 365 / 163.5 = 1718.96 -> gold.
    config = FeatureConfig(history_start=pd.Timestamp("2024-01-01").to_pydatetime())
    row = member_features(tables, F.AS_OF, config).execute().set_index("member_id").loc["m1"]
    assert row["points_tier_window"] == pytest.approx(770 * 365 / 163.5)
    assert row["tier"] == "gold"
    assert row["points_to_next_tier"] == pytest.approx(3200 - 770 * 365 / 163.5)


def test_category_shares(feats):
    # Categories come from transactions before AS_OF (t9's 'toys' after AS_OF adds nothing new;
    # t8's 'toys' is before it). m1 spend in the 365-day window: grocery 460, beauty 205,
    # electronics 100, no category 5 (-> other); t8 (toys) is older than the window.
    cats = [c for c in feats.columns if c.startswith("share_")]
    assert cats == [
        "share_beauty",
        "share_electronics",
        "share_grocery",
        "share_home",
        "share_toys",
        "share_other",
    ]
    _check(
        _row(feats, "m1"),
        {
            "share_grocery": 460 / 770,
            "share_beauty": 205 / 770,
            "share_electronics": 100 / 770,
            "share_toys": 0.0,
            "share_home": 0.0,
            "share_other": 5 / 770,
        },
    )
    _check(_row(feats, "m2"), {c: None for c in cats})  # no spend: shares undefined
    _check(_row(feats, "m6"), {"share_home": 1.0, "share_grocery": 0.0})


def test_categories_outside_the_configured_list_go_to_other(tables):
    config = FeatureConfig(categories=("grocery", "Beauty & Care"))
    df = member_features(tables, F.AS_OF, config).execute().set_index("member_id")
    assert [c for c in df.columns if c.startswith("share_")] == [
        "share_grocery",
        "share_beauty_care",
        "share_other",
    ]
    _check(
        df.loc["m1"].to_dict(),
        {"share_grocery": 460 / 770, "share_beauty_care": 0.0, "share_other": 310 / 770},
    )


def test_resolve_categories_keeps_the_top_spenders(tables):
    # Spend before AS_OF: home 4500, toys 1000, grocery 580, beauty 205, electronics 100.
    config = resolve_categories(tables, FeatureConfig(max_categories=2), before=F.AS_OF)
    assert config.categories == ("home", "toys")
    explicit = FeatureConfig(categories=("a",))
    assert resolve_categories(tables, explicit, before=F.AS_OF) is explicit


def test_offer_response_history(feats):
    # m1 before AS_OF: sent o1 (discount_pct), o2 (bonus_points), o3 (informational); viewed
    # and redeemed o1; dismissed o3. The o2 view at AS_OF, the send after it and held_out
    # events do not count. Last send 2024-06-10 00:00 -> 2.5 days.
    _check(
        _row(feats, "m1"),
        {
            "offers_received": 3,
            "offers_viewed": 1,
            "offers_redeemed": 1,
            "offers_dismissed": 1,
            "offer_view_rate": 1 / 3,
            "offer_redemption_rate": 1 / 3,
            "days_since_last_offer": 2.5,
            "received_discount_pct": 1,
            "viewed_discount_pct": 1,
            "redeemed_discount_pct": 1,
            "view_rate_discount_pct": 1.0,
            "redemption_rate_discount_pct": 1.0,
            "received_bonus_points": 1,
            "viewed_bonus_points": 0,
            "view_rate_bonus_points": 0.0,
            "received_informational": 1,
            "redemption_rate_informational": 0.0,
            "received_credit": 0,
            "view_rate_credit": None,
            "redemption_rate_credit": None,
        },
    )
    # A redemption without a send (checkout): counted, rates undefined.
    _check(
        _row(feats, "m6"),
        {
            "offers_received": 0,
            "offers_redeemed": 1,
            "redeemed_bonus_points": 1,
            "offer_redemption_rate": None,
            "days_since_last_offer": None,
        },
    )


def test_birthday_and_anniversary(feats):
    _check(
        _row(feats, "m1"),
        {  # born 1990-06-20, joined 2023-01-15
            "days_to_birthday": 8,
            "age": 33.0,
            "days_to_anniversary": 217,
            "membership_years": 1,
        },
    )
    # Born 29 Feb 2000: birthday on 28 Feb 2025 (not a leap year); 24 since 29 Feb 2024.
    _check(
        _row(feats, "m2"),
        {
            "days_to_birthday": 261,
            "age": 24.0,
            "days_to_anniversary": 323,
            "membership_years": 0,
        },
    )
    # No birth date: days_to_birthday null, age from the members table's age column.
    _check(
        _row(feats, "m3"),
        {
            "days_to_birthday": None,
            "age": 40.0,
            "days_to_anniversary": 262,
            "membership_years": 2,
        },
    )
    # Joined 29 Feb 2020: anniversary on 28 Feb 2025; 4 completed years.
    _check(
        _row(feats, "m6"),
        {
            "days_to_birthday": None,
            "age": None,
            "days_to_anniversary": 261,
            "membership_years": 4,
        },
    )


def test_birthday_today_is_zero_days(tables):
    df = member_features(tables, "2024-06-20 09:00").execute().set_index("member_id")
    _check(df.loc["m1"].to_dict(), {"days_to_birthday": 0, "age": 34.0})


def test_purchase_streak(feats):
    # AS_OF's week starts Mon 2024-06-10. m1 bought in that week (not counted), 1 and 2 weeks
    # before, not 3 weeks before, again 4 weeks before: streak 2.
    assert feats["purchase_streak_weeks"].to_dict() == {"m1": 2, "m2": 0, "m3": 0, "m6": 0}


def test_purchase_streak_counts_consecutive_weeks(tables):
    # As of Mon 2023-11-13 00:00, m3's purchases on 1..12 Nov fall in the weeks starting
    # 30 Oct (2 weeks before) and 6 Nov (the week before): streak 2. As of 20 Nov: the week
    # before (13 Nov) is empty: 0.
    for when, want in (("2023-11-13", 2), ("2023-11-20", 0), ("2023-11-08", 1)):
        df = member_features(tables, when).execute().set_index("member_id")
        assert df.loc["m3", "purchase_streak_weeks"] == want, when


def test_milestones(feats):
    _check(
        _row(feats, "m1"),
        {"last_milestone": 0, "next_milestone": 10, "purchases_to_next_milestone": 3},
    )
    _check(
        _row(feats, "m3"),
        {"last_milestone": 10, "next_milestone": 25, "purchases_to_next_milestone": 13},
    )
    _check(
        _row(feats, "m2"),
        {"last_milestone": 0, "next_milestone": 10, "purchases_to_next_milestone": 10},
    )


def test_beyond_the_last_milestone_has_no_next(tables):
    df = member_features(tables, F.AS_OF, FeatureConfig(milestones=(2, 5))).execute()
    row = df.set_index("member_id").loc["m3"]
    assert row["last_milestone"] == 5
    assert pd.isna(row["next_milestone"]) and pd.isna(row["purchases_to_next_milestone"])


def test_profile_columns(feats):
    _check(_row(feats, "m1"), {"gender": "F", "income": 50000.0, "region": "north", "segment": "A"})
    _check(_row(feats, "m6"), {"gender": None, "income": None, "segment": None})


def test_offer_features():
    df = offer_features(tables_from_frames(F.frames())).execute().set_index("offer_id")
    assert df.loc["o1"].to_dict() == {
        "offer_kind": "discount_pct",
        "offer_value": 10.0,
        "offer_cost": 8.0,
        "offer_value_cost_ratio": 1.25,
        "offer_zero_cost": False,
        "offer_min_spend": 50.0,
        "offer_category": "grocery",
        "offer_duration_days": 14.0,
    }
    # Free to the business: no ratio, flagged; no minimum spend is 0; no duration stays null.
    assert math.isnan(df.loc["o4", "offer_value_cost_ratio"])
    assert bool(df.loc["o4", "offer_zero_cost"]) is True
    assert df.loc["o2", "offer_min_spend"] == 0.0
    assert pd.isna(df.loc["o3", "offer_duration_days"])


def test_parquet_and_csv_data_dirs_give_the_same_features(tmp_path, feats):
    frames = F.frames()
    pq_dir, csv_dir = tmp_path / "pq", tmp_path / "csv"
    csv_dir.mkdir()
    for name, df in frames.items():
        write_table(df, pq_dir, name)
        if name != "offer_events":  # a source without campaigns: empty offer_events
            df.to_csv(csv_dir / f"{name}.csv", index=False)
    from_pq = member_features(load_tables(pq_dir), F.AS_OF).execute().set_index("member_id")
    pd.testing.assert_frame_equal(from_pq.sort_index(), feats.sort_index())
    from_csv = member_features(load_tables(csv_dir), F.AS_OF).execute().set_index("member_id")
    no_events = feats.drop(
        columns=[
            c
            for c in feats.columns
            if "offer" in c or "received" in c or "viewed" in c or "redeemed" in c or "rate" in c
        ]
    )
    pd.testing.assert_frame_equal(
        from_csv[no_events.columns].drop(columns="points_balance").sort_index(),
        no_events.drop(columns="points_balance").sort_index(),
    )
    assert (from_csv["offers_received"] == 0).all()


def test_missing_members_table_is_named(tmp_path):
    write_table(F.transactions(), tmp_path, "transactions")
    with pytest.raises(FeatureInputError, match="no 'members' table"):
        load_tables(tmp_path)


def test_missing_required_column_is_named():
    frames = F.frames()
    frames["transactions"] = frames["transactions"].drop(columns="amount")
    with pytest.raises(FeatureInputError, match=r"\['amount'\].*'transactions'"):
        tables_from_frames(frames)


def test_bad_as_of_is_named(tables):
    with pytest.raises(FeatureInputError, match=r"as_of.*not-a-date"):
        member_features(tables, "not-a-date")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tier_thresholds": {"diamond": 10.0}}, "unknown tier"),
        ({"tier_thresholds": {"silver": 900.0, "gold": 800.0}}, "rise with the tier"),
        ({"lapsing_days": 130.0}, "lapsing_days < lapsed_days"),
        ({"windows_days": (90, 30)}, "strictly increasing"),
        ({"categories": ("Home", "home")}, "collide"),
        ({"categories": ("other",)}, "reserved"),
        ({"offer_kinds": ("coupon",)}, "unknown kind"),
    ],
)
def test_config_errors_name_the_setting(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        FeatureConfig(**kwargs)


def test_category_slug():
    assert category_slug("Beauty & Care") == "beauty_care"
    assert category_slug("  MEAT-PCKGD ") == "meat_pckgd"
    assert category_slug("%%") == "blank"
