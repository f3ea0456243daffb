"""The uplift training set's features query in slices of pairs (``pairs_per_query``, issue 18)
gives the frame one query gives: every column, dtype and value, on a hand-made program with
known answers and on a simulated one; the setting is validated."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.test_uplift_training_set import S1, S2, _frames
from training.uplift.data import (
    TrainingSetConfig,
    UpliftDataError,
    build_training_set,
    open_tables,
)


def _build(data: Path, pairs_per_query: int | None, treatment: str = "kind"):
    tables = open_tables(data, memory_limit="512MB")
    cfg = TrainingSetConfig(treatment=treatment, pairs_per_query=pairs_per_query)  # type: ignore[arg-type]
    return build_training_set(tables, cfg)


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
    assert a.feature_columns == b.feature_columns and a.dropped == b.dropped


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    for name, df in _frames().items():
        df.to_parquet(out / f"{name}.parquet")
    return out


def test_one_pair_per_query_gives_the_known_answers(tiny: Path, caplog) -> None:
    whole = _build(tiny, None)
    with caplog.at_level(logging.INFO, logger="training.uplift.data"):
        sliced = _build(tiny, 1)
    assert "features of 6 pairs in 6 queries" in caplog.text  # the sliced path ran
    _same(sliced, whole)
    f = sliced.frame.set_index("event_id")
    assert f.loc["e1", "ts"] == S1 and f.loc["e6", "ts"] == S2
    # the answers of tests/unit/test_uplift_training_set.py (one query): the S1 basket is not
    # visible at S1; at S2 m1 has every purchase and the S1 send and its view
    assert f.loc["e1", "n_purchases_total"] == 1
    assert f.loc["e1", "spend_total"] == pytest.approx(50.0)
    assert f.loc["e1", "offers_received"] == 0
    assert f.loc["e6", "n_purchases_total"] == 5
    assert f.loc["e6", "spend_total"] == pytest.approx(1172.0)
    assert (f.loc["e6", "offers_received"], f.loc["e6", "offers_viewed"]) == (1, 1)
    assert "e4" not in f.index  # m3 joined after the send: dropped in every slice
    assert sliced.frame.isna().to_numpy().any()  # nulls cross the concatenation too


def test_slices_of_a_simulated_program_equal_one_query(tmp_path: Path, caplog) -> None:
    from features.sim.simulate import simulate

    data = tmp_path / "program"
    simulate(n_members=1_500, seed=11).write(data)
    whole = _build(data, None, "offer")
    n = len(whole.frame)
    assert n > 1_000
    with caplog.at_level(logging.INFO, logger="training.uplift.data"):
        sliced = _build(data, 317, "offer")
    assert "in 1 queries" not in caplog.text and " queries" in caplog.text
    _same(sliced, whole)


def test_pairs_per_query_is_validated() -> None:
    with pytest.raises(UpliftDataError, match="pairs_per_query must be >= 1 or None; got 0"):
        TrainingSetConfig(pairs_per_query=0)
    assert TrainingSetConfig().pairs_per_query == 400_000
