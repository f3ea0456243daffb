"""The same feature expressions on DuckDB and on local Spark give the same values.

On a simulated program of 2,000 members: every member feature at one as_of, features of
(member, send time) pairs, offer features, and the CSV path (Spark reads text and casts).
Only floating point may differ, within 1e-9 relative.
"""

from __future__ import annotations

import pandas as pd
import pytest

from features.pipeline import (
    FeatureConfig,
    features_at,
    load_tables,
    member_features,
    offer_features,
    resolve_categories,
    tables_from_frames,
)
from features.sim.simulate import simulate
from tests.support import features as F

pytestmark = [pytest.mark.spark, pytest.mark.slow]

AS_OF = pd.Timestamp("2026-08-01 06:00")


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim2000")
    simulate(n_members=2_000, seed=11).write(out)
    return out


@pytest.fixture(scope="module")
def config(program_dir) -> FeatureConfig:
    return resolve_categories(load_tables(program_dir), FeatureConfig(), before=AS_OF)


def _same(left: pd.DataFrame, right: pd.DataFrame, keys: list[str]) -> None:
    assert list(left.columns) == list(right.columns)
    left = left.sort_values(keys).reset_index(drop=True)
    right = right.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        left, right, check_dtype=False, check_exact=False, rtol=1e-9, atol=1e-12
    )


def test_member_features_duckdb_equals_spark(program_dir, config, spark_con):
    duck = member_features(load_tables(program_dir), AS_OF, config).execute()
    spark = member_features(load_tables(program_dir, spark_con), AS_OF, config).execute()
    assert len(duck) > 1_500
    # The program exercises the features (not a parity of empty columns).
    assert duck["n_purchases_total"].gt(0).mean() > 0.5
    assert duck["offers_received"].gt(0).any() and duck["purchase_streak_weeks"].gt(1).any()
    assert set(duck["lifecycle_stage"]) == {"onboarding", "active", "lapsing", "lapsed"}
    _same(duck, spark, ["member_id"])


def test_features_at_pairs_duckdb_equals_spark(program_dir, config, spark_con):
    events = pd.read_parquet(program_dir / "offer_events.parquet")
    sends = events[events["event"] == "sent"].sample(n=400, random_state=0)
    pairs = sends[["member_id", "ts"]].rename(columns={"ts": "decision_time"})
    duck = features_at(load_tables(program_dir), pairs, config, time_col="decision_time")
    spark = features_at(
        load_tables(program_dir, spark_con), pairs, config, time_col="decision_time"
    )
    d = duck.execute()
    assert len(d) == len(pairs.drop_duplicates())
    _same(d, spark.execute(), ["member_id", "decision_time"])


def test_offer_features_duckdb_equals_spark(program_dir, spark_con):
    duck = offer_features(load_tables(program_dir)).execute()
    spark = offer_features(load_tables(program_dir, spark_con)).execute()
    _same(duck, spark, ["offer_id"])


def test_csv_on_spark_equals_frames_on_duckdb(tmp_path, spark_con):
    for name, df in F.frames().items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    expected = member_features(tables_from_frames(F.frames()), F.AS_OF).execute()
    got = member_features(load_tables(tmp_path, spark_con), F.AS_OF).execute()
    _same(expected, got, ["member_id"])


def test_frames_uploaded_to_spark_equal_duckdb(spark_con):
    frames = F.frames()
    del frames["offer_events"]  # an absent table becomes an empty one
    expected = member_features(tables_from_frames(frames), F.AS_OF).execute()
    got = member_features(tables_from_frames(frames, spark_con), F.AS_OF).execute()
    assert (got["offers_received"] == 0).all()
    _same(expected, got, ["member_id"])
