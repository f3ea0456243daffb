"""Point-in-time correctness: per-pair times, and no leakage from rows on or after as_of."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.pipeline import (
    FeatureInputError,
    features_at,
    member_features,
    resolve_categories,
    tables_from_frames,
)
from features.pipeline.config import FeatureConfig
from features.sim.simulate import simulate
from features.sources.io import to_canonical_frame
from features.sources.schema import EVENTS
from tests.support import features as F


@pytest.fixture(scope="module")
def tables():
    return tables_from_frames(F.frames())


@pytest.fixture(scope="module")
def config(tables) -> FeatureConfig:
    return resolve_categories(tables, FeatureConfig(), before=F.AS_OF)


@pytest.fixture(scope="module")
def baseline(tables, config) -> pd.DataFrame:
    return _sorted(member_features(tables, F.AS_OF, config).execute())


def _sorted(df: pd.DataFrame, keys: tuple[str, ...] = ("member_id",)) -> pd.DataFrame:
    return df.sort_values(list(keys)).reset_index(drop=True)


def test_features_at_equals_member_features_at_each_pairs_time(tables, config):
    times = {
        "a": F.AS_OF,
        "b": pd.Timestamp("2024-01-01"),
        "c": pd.Timestamp("2023-11-06 12:00"),  # in the middle of m3's purchases
        "d": pd.Timestamp("2024-04-13 12:00"),  # exactly at m6's purchase: not visible
    }
    pairs = pd.DataFrame(
        [
            ("m1", times["a"]),
            ("m1", times["b"]),
            ("m1", times["a"]),  # duplicate pair: one row
            ("m3", times["c"]),
            ("m6", times["d"]),
            ("m2", times["a"]),
            ("m4", times["a"]),  # joined exactly at that time: dropped
            ("zz", times["a"]),  # unknown member: dropped
        ],
        columns=["member_id", "decision_time"],
    )
    got = features_at(tables, pairs, config, time_col="decision_time").execute()
    assert "decision_time" in got.columns and "as_of" not in got.columns
    got = _sorted(got, ("member_id", "decision_time"))
    assert list(zip(got["member_id"], got["decision_time"], strict=True)) == [
        ("m1", times["b"]),
        ("m1", times["a"]),
        ("m2", times["a"]),
        ("m3", times["c"]),
        ("m6", times["d"]),
    ]
    for _, pair in got.iterrows():
        single = member_features(tables, pair["decision_time"], config).execute()
        one = single[single["member_id"] == pair["member_id"]].reset_index(drop=True)
        row = pair.to_frame().T.rename(columns={"decision_time": "as_of"}).reset_index(drop=True)
        pd.testing.assert_frame_equal(row, one, check_dtype=False)
    # m6 at its purchase time: the purchase itself is not visible.
    assert got.loc[got["member_id"] == "m6", "n_purchases_total"].item() == 0


def test_features_at_on_a_simulated_program_matches_single_as_of():
    program = simulate(n_members=300, seed=3)
    tables = tables_from_frames(program)
    sends = program.offer_events[program.offer_events["event"] == "sent"]
    pairs = sends.sample(n=4, random_state=1)[["member_id", "ts"]]
    config = resolve_categories(tables, FeatureConfig(), before=pairs["ts"].max())
    got = _sorted(features_at(tables, pairs, config, time_col="ts").execute(), ("member_id", "ts"))
    assert len(got) == 4
    for _, pair in got.iterrows():
        single = member_features(tables, pair["ts"], config).execute()
        one = single[single["member_id"] == pair["member_id"]].reset_index(drop=True)
        row = pair.to_frame().T.rename(columns={"ts": "as_of"}).reset_index(drop=True)
        pd.testing.assert_frame_equal(row, one, check_dtype=False)
        assert one["offers_received"].item() >= 0


def test_features_at_accepts_an_ibis_pairs_table(tables, config):
    pairs = tables.offer_events.filter(tables.offer_events.event == "sent").select(
        "member_id", decision_time="ts"
    )
    got = features_at(tables, pairs, config, time_col="decision_time").execute()
    # m1's three sends before AS_OF and one after it: four pairs, each seeing only the past.
    assert sorted(got["offers_received"]) == [0, 1, 2, 3]


def test_features_at_errors_name_the_column(tables, config):
    with pytest.raises(FeatureInputError, match="'decision_time' missing"):
        features_at(tables, pd.DataFrame({"member_id": ["m1"]}), config, "decision_time")
    bad = pd.DataFrame({"member_id": ["m1", "m2"], "as_of": [F.AS_OF, None]})
    with pytest.raises(FeatureInputError, match=r"null or unreadable 'as_of' in rows \[1\]"):
        features_at(tables, bad, config)


_when = st.integers(min_value=0, max_value=400 * 86_400).map(
    lambda s: F.AS_OF + pd.Timedelta(seconds=s)
)
_line = st.tuples(
    st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m6"]),
    _when,
    st.floats(min_value=0, max_value=1e5, allow_nan=False),
    st.sampled_from(["grocery", "beauty", "brand-new", None]),
    st.sampled_from(["t2", "t3", "fresh"]),  # reusing ids of visible baskets too
)
_event = st.tuples(
    st.sampled_from(["m1", "m2", "m6"]),
    _when,
    st.sampled_from(EVENTS),
    st.sampled_from(["o1", "o2", "o3", "o4"]),
)
_member = st.tuples(_when, st.sampled_from(["2000-01-01", "1999-02-28", None]))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(_line, max_size=15),
    events=st.lists(_event, max_size=10),
    members=st.lists(_member, max_size=3),
)
def test_rows_on_or_after_as_of_change_nothing(baseline, lines, events, members):
    frames = F.frames()
    new_lines = pd.DataFrame(
        lines, columns=["member_id", "ts", "amount", "category", "transaction_id"]
    )
    frames["transactions"] = pd.concat(
        [frames["transactions"], to_canonical_frame(new_lines, "transactions")],
        ignore_index=True,
    )
    new_events = pd.DataFrame(events, columns=["member_id", "ts", "event", "offer_id"])
    new_events["event_id"] = [f"x{i}" for i in range(len(new_events))]
    frames["offer_events"] = pd.concat(
        [frames["offer_events"], to_canonical_frame(new_events, "offer_events")],
        ignore_index=True,
    )
    new_members = pd.DataFrame(
        [(f"new{i}", joined, born) for i, (joined, born) in enumerate(members)],
        columns=["member_id", "joined_at", "birth_date"],
    )
    new_members["birth_date"] = pd.to_datetime(new_members["birth_date"])
    frames["members"] = pd.concat(
        [frames["members"], to_canonical_frame(new_members, "members")], ignore_index=True
    )
    # No explicit config: the category list is resolved from the data too.
    got = member_features(tables_from_frames(frames), F.AS_OF).execute()
    pd.testing.assert_frame_equal(_sorted(got), baseline)
