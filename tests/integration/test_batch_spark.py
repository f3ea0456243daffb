"""Batch scoring on local Spark (mapInPandas, broadcast plan and models) against the local
engine, on a simulated program of 2,000 members: identical decisions without budgets, total
spend within 1% with budgets (prices solved once, per-partition quotas)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.catalog.model import load_catalog
from serving.batch import SendPlan, SyntheticScorer, run_local
from serving.batch.spark import run_spark
from tests.support.batch import build_batch_program, campaign

pytestmark = pytest.mark.slow

KEYS = ["member_id", "rank"]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build_batch_program(tmp_path_factory.mktemp("program"))


def both(spark, program, tmp_path, camp):
    data, feats = program
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))
    cat = load_catalog(data / "catalog.yaml")
    plan_l = SendPlan.create(camp, cat)
    rl = run_local(camp, plan_l, SyntheticScorer(), feats, tmp_path / "l.parquet", 300)
    plan_s = SendPlan.create(camp, cat)
    rs = run_spark(
        spark, camp, plan_s, SyntheticScorer(), feats, tmp_path / "s.parquet", partitions=3
    )
    local = pd.read_parquet(tmp_path / "l.parquet").sort_values(KEYS, ignore_index=True)
    spark_ = pd.read_parquet(tmp_path / "s.parquet").sort_values(KEYS, ignore_index=True)
    return local, spark_, rl, rs, plan_l


def test_spark_equals_local_without_budgets(spark_session, program, tmp_path):
    data, _ = program
    ids = [o.offer_id for o in load_catalog(data / "catalog.yaml").offers]
    camp = campaign(budgets={i: 1e12 for i in ids})  # every catalog budget out of reach
    local, spark_, _, rs, _ = both(spark_session, program, tmp_path, camp)
    assert rs.chunks == 3
    assert len(local) > 1000
    pd.testing.assert_frame_equal(local, spark_, check_dtype=False)


def test_spark_spend_within_one_percent_with_budgets(spark_session, program, tmp_path):
    data, _ = program
    ids = [o.offer_id for o in load_catalog(data / "catalog.yaml").offers]
    _, _, rf, _, _ = both(
        spark_session, program, tmp_path, campaign(budgets={i: 1e12 for i in ids})
    )
    per = np.asarray(rf.budget_used)
    top = [ids[j] for j in np.argsort(-per)[:4]]
    tight = {i: 0.5 * per[ids.index(i)] for i in top}
    camp = campaign(budgets={**{i: 1e12 for i in ids}, **tight}, total_money=0.7 * rf.money_used)
    local, spark_, rl, rs, _ = both(spark_session, program, tmp_path, camp)
    assert any(v > 0 for v in rl.prices.values())
    for name, r in (("local", rl), ("spark", rs)):
        used = np.asarray(r.budget_used)
        for i, lim in tight.items():
            assert used[ids.index(i)] <= lim + 1e-6, (name, i)
        assert r.money_used <= 0.7 * rf.money_used + 1e-6, name
    assert rs.money_used == pytest.approx(rl.money_used, rel=0.01)
    shared = local.merge(spark_, on=KEYS, suffixes=("_l", "_s"))
    agree = (shared["offer_id_l"].fillna("") == shared["offer_id_s"].fillna("")).mean()
    assert agree > 0.95
