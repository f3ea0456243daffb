"""Known answers for the demo summary on a tiny program."""

from __future__ import annotations

import pandas as pd
import pytest

from features.sources.summary import conversion_by_arm, redemption_by_kind, summarize
from features.sources.validate import validate_dir
from tests.support.tables import NOW, good_tables, write_csv


@pytest.fixture()
def tables(tmp_path):
    res = validate_dir(write_csv(tmp_path, good_tables()), now=NOW)
    assert res.ok
    return res.tables


def test_conversion_by_arm_known_answer(tables):
    arms = conversion_by_arm(tables["offer_events"], tables["transactions"], window_days=14)
    # m1 sent 01-01, bought 01-02 (converted); m3 sent, never bought; m2 held out 01-01,
    # bought 02-03 (33 days later: outside the window)
    assert arms.loc["treated", "members"] == 2
    assert arms.loc["treated", "conversion"] == pytest.approx(0.5)
    assert arms.loc["control", "conversion"] == pytest.approx(0.0)
    wide = conversion_by_arm(tables["offer_events"], tables["transactions"], window_days=40)
    assert wide.loc["control", "conversion"] == pytest.approx(1.0)


def test_redemption_by_kind_known_answer(tables):
    red = redemption_by_kind(tables["offers"], tables["offer_events"])
    assert red.loc["discount_pct", "sent"] == 1
    assert red.loc["discount_pct", "redeemed"] == 1
    assert red.loc["free_item", "redemption_rate"] == pytest.approx(0.0)


def test_summarize_crosses_tier_and_stage(tables):
    stage = pd.Series({"m1": "active", "m2": "lapsed", "m3": "onboarding"})
    out = summarize(tables, lifecycle=stage)
    grid = out["members_by_tier_and_stage"]
    assert grid.loc["gold", "active"] == 1 and grid.loc["silver", "onboarding"] == 1
    assert out["members"] == 3 and out["offers_by_kind"].sum() == 2
