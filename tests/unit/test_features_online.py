"""One member online: identical to the batch pipeline, plus the live basket context."""

from __future__ import annotations

import pandas as pd
import pytest

from features.pipeline import (
    FeatureInputError,
    member_features,
    resolve_categories,
    tables_from_frames,
)
from features.pipeline.config import FeatureConfig
from features.pipeline.online import BASKET_COLUMNS, OnlineFeatures, basket_context
from features.sim.simulate import simulate
from tests.support import features as F


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return F.frames()


@pytest.fixture(scope="module")
def config(frames) -> FeatureConfig:
    return resolve_categories(tables_from_frames(frames), FeatureConfig(), before=F.AS_OF)


@pytest.fixture(scope="module")
def online(frames, config) -> OnlineFeatures:
    return OnlineFeatures(config, frames["offers"])


def _rows_of(frames: dict[str, pd.DataFrame], member: str) -> tuple[pd.DataFrame, ...]:
    return tuple(
        frames[t][frames[t]["member_id"] == member]
        for t in ("members", "transactions", "offer_events")
    )


def _same_values(online_row: pd.DataFrame, batch_row: pd.DataFrame) -> None:
    # Values must be identical; only the pandas dtype of a column may differ (a batch column
    # holding nulls for other members is float64 where one member's value is an int64).
    pd.testing.assert_frame_equal(
        online_row.reset_index(drop=True)[batch_row.columns],
        batch_row.reset_index(drop=True),
        check_dtype=False,
        check_exact=True,
    )


def test_online_equals_batch_on_the_tiny_program(frames, config, online):
    batch = member_features(tables_from_frames(frames), F.AS_OF, config).execute()
    for member in ("m1", "m2", "m3", "m6"):
        got = online.compute(*_rows_of(frames, member), F.AS_OF)
        _same_values(got, batch[batch["member_id"] == member])


def test_rows_of_other_members_are_ignored(frames, online):
    member = frames["members"][frames["members"]["member_id"] == "m1"]
    alone = online.compute(*_rows_of(frames, "m1"), F.AS_OF)
    mixed = online.compute(member, frames["transactions"], frames["offer_events"], F.AS_OF)
    pd.testing.assert_frame_equal(alone, mixed)


def test_member_not_joined_before_as_of_gives_no_row(frames, online):
    assert len(online.compute(*_rows_of(frames, "m4"), F.AS_OF)) == 0


def test_online_equals_batch_on_a_simulated_program():
    program = simulate(n_members=400, seed=5)
    frames = {t: getattr(program, t) for t in ("members", "offers", "transactions", "offer_events")}
    as_of = pd.Timestamp("2026-08-01 06:00")
    tables = tables_from_frames(frames)
    config = resolve_categories(tables, FeatureConfig(), before=as_of)
    batch = member_features(tables, as_of, config).execute()
    online = OnlineFeatures(config, program.offers)
    sample = batch.sample(n=25, random_state=2)["member_id"]
    by_member = {
        t: dict(tuple(frames[t][frames[t]["member_id"].isin(sample)].groupby("member_id")))
        for t in ("members", "transactions", "offer_events")
    }
    empty = {t: frames[t].iloc[:0] for t in by_member}
    checked_buyers = 0
    for member in sample:
        rows = [
            by_member[t].get(member, empty[t]) for t in ("members", "transactions", "offer_events")
        ]
        got = online.compute(*rows, as_of)
        _same_values(got, batch[batch["member_id"] == member])
        checked_buyers += int(got["n_purchases_total"].item() > 0)
    assert checked_buyers >= 15


def test_basket_context_columns(frames, online):
    basket = pd.DataFrame({"amount": [5.0, 700.0], "category": ["grocery", "tv"]})
    row = online.compute(*_rows_of(frames, "m1"), F.AS_OF, basket=basket).iloc[0]
    assert row["basket_total"] == 705.0
    assert row["basket_n_lines"] == 2 and row["basket_n_categories"] == 2
    assert row["basket_top_category"] == "tv"
    assert row["basket_points"] == 705.0
    assert row["basket_share_grocery"] == pytest.approx(5 / 705)
    assert row["basket_share_other"] == pytest.approx(700 / 705)
    assert row["basket_share_beauty"] == 0.0
    # m1 needs 630 points for gold: this basket's 705 points get there. 7 purchases so far,
    # next milestone 10: this purchase is not the milestone.
    assert bool(row["basket_reaches_next_tier"]) is True
    assert bool(row["basket_is_milestone"]) is False
    # The basket is context, not history: the history features did not move.
    assert row["spend_total"] == 1770.0 and row["n_purchases_total"] == 7
    assert set(BASKET_COLUMNS) <= set(row.index)


def test_basket_context_milestone_and_top_tier(config):
    history = pd.DataFrame({"points_to_next_tier": [None], "purchases_to_next_milestone": [1]})
    ctx = basket_context(pd.DataFrame({"amount": [10.0]}), config, history).iloc[0]
    assert bool(ctx["basket_is_milestone"]) is True
    assert bool(ctx["basket_reaches_next_tier"]) is False  # already at the top tier
    assert ctx["basket_top_category"] is None
    assert ctx["basket_share_other"] == 1.0
    empty = basket_context(pd.DataFrame({"amount": []}), config).iloc[0]
    assert empty["basket_total"] == 0.0 and pd.isna(empty["basket_share_other"])
    assert empty["basket_reaches_next_tier"] is None


def test_online_errors_are_named(frames, config, online):
    with pytest.raises(FeatureInputError, match="categories"):
        OnlineFeatures(FeatureConfig(), frames["offers"])
    with pytest.raises(FeatureInputError, match="one members row, got 2"):
        online.compute(
            frames["members"].iloc[:2], frames["transactions"], frames["offer_events"], F.AS_OF
        )
    with pytest.raises(FeatureInputError, match="'amount' missing"):
        basket_context(pd.DataFrame({"price": [1.0]}), config)
    with pytest.raises(FeatureInputError, match="negative amount"):
        basket_context(pd.DataFrame({"amount": [-1.0]}), config)
    no_ts = frames["transactions"].drop(columns="ts")
    with pytest.raises(FeatureInputError, match=r"transactions.*\['ts'\]"):
        online.compute(*_rows_of(frames, "m1")[:1], no_ts, frames["offer_events"], F.AS_OF)
