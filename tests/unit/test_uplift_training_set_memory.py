"""The training set's memory-saving conversion gives the frame the plain conversion gives (issue
18): ``_to_pandas`` (column by column, Arrow columns dropped as they go) equals Ibis'
``to_pandas`` with the same dtypes, and ``_attach`` (column-wise take) equals an inner merge of
the arms, in (ts, event_id) order, with their features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.pipeline import features_at, resolve_categories
from features.pipeline.config import FeatureConfig
from features.sources import schema as S
from training.uplift.data import (
    TrainingSetConfig,
    _arms,
    _attach,
    _to_pandas,
    build_training_set,
    open_tables,
)


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.sim.simulate import simulate

    out = tmp_path_factory.mktemp("ts-memory") / "program"
    simulate(n_members=1_500, seed=11).write(out)
    return out


def _features(program: Path):
    tables = open_tables(program)
    arms = _arms(tables, TrainingSetConfig(treatment="offer"))
    fcfg = resolve_categories(tables, FeatureConfig(), before=arms[S.TS].max())
    pairs = arms[[S.MEMBER_ID, S.TS]].drop_duplicates()
    return arms, features_at(tables, pairs, fcfg, time_col=S.TS)


def test_to_pandas_equals_ibis_to_pandas(program: Path) -> None:
    _, expr = _features(program)
    fast, plain = _to_pandas(expr), expr.to_pandas()
    assert len(fast) > 1_000
    assert fast.isna().any().any()  # the columns with nulls (the slow path) are exercised
    # two executions of one DuckDB query need not return rows in one order: compare as sets
    keys = list(plain.columns)
    pd.testing.assert_frame_equal(
        fast.sort_values(keys, kind="mergesort").reset_index(drop=True),
        plain.sort_values(keys, kind="mergesort").reset_index(drop=True),
    )


def test_attach_equals_an_inner_merge_in_send_order(program: Path) -> None:
    arms, expr = _features(program)
    feats = _to_pandas(expr)
    feats[S.TS] = feats[S.TS].astype("datetime64[us]")
    keys = [S.MEMBER_ID, S.TS]
    reference = (
        arms.sort_values([S.TS, S.EVENT_ID], kind="mergesort")
        .merge(feats, on=keys, how="inner", validate="many_to_one")
        .reset_index(drop=True)
    )
    got = _attach(arms, feats.copy())
    pd.testing.assert_frame_equal(got, reference)
    # a member's sends before joining are left out: fewer rows than arms is possible, never more
    assert len(got) <= len(arms)


def test_training_set_is_unchanged(program: Path) -> None:
    """The whole training set against the same steps written the plain way."""
    ts = build_training_set(open_tables(program), TrainingSetConfig(treatment="offer"))
    arms, expr = _features(program)
    feats = expr.to_pandas()
    feats[S.TS] = feats[S.TS].astype("datetime64[us]")
    plain = (
        arms.sort_values([S.TS, S.EVENT_ID], kind="mergesort")
        .merge(feats, on=[S.MEMBER_ID, S.TS], how="inner")
        .reset_index(drop=True)
    )
    cols = [c for c in plain.columns if c in ts.frame.columns]
    assert set(ts.feature_columns) <= set(cols)
    pd.testing.assert_frame_equal(ts.frame[cols], plain[cols])
