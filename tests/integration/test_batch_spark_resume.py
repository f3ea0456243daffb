"""Resume of ``--engine spark``: pass 2 runs as jobs over partition ranges, each recorded in a
manifest (with the prices and quotas) once its part files are written and its decisions
stored; a resumed run skips the recorded ranges and gives the same file, with each decision
stored once."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.catalog.model import load_catalog
from serving.batch import ResumeError, SendPlan, SyntheticScorer
from serving.batch.local import parts_dir
from serving.batch.spark import run_spark
from tests.support.batch import Crash, FakeStore, build_batch_program, campaign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build_batch_program(tmp_path_factory.mktemp("program"))


def _run(spark, program, out, **kw):
    data, feats = program
    cat = load_catalog(data / "catalog.yaml")
    ids = [o.offer_id for o in cat.offers]
    camp = kw.pop("camp", None) or campaign(budgets={ids[0]: 5.0, ids[1]: 8.0})
    plan = SendPlan.create(camp, cat)
    kw.setdefault("partitions", 4)
    return run_spark(spark, camp, plan, SyntheticScorer(), feats, out, **kw)


def test_spark_resume_after_a_crash(spark_session, program, tmp_path):
    ref_store = FakeStore()
    ref = _run(spark_session, program, tmp_path / "ref.parquet", store=ref_store)
    expected = pd.read_parquet(tmp_path / "ref.parquet")
    assert len(ref_store.rows) == expected["member_id"].nunique() == ref.members

    def crash_after_1(k: int, _done: int) -> None:
        if k == 1:
            raise Crash

    out = tmp_path / "out.parquet"
    store = FakeStore()
    with pytest.raises(Crash):
        _run(spark_session, program, out, store=store, on_range=crash_after_1)
    assert not out.exists()
    manifest_path = parts_dir(out) / "spark" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest["ranges"]) == 2 and manifest["quotas"]
    with pytest.raises(ResumeError, match="--resume"):
        _run(spark_session, program, out, store=store)
    with pytest.raises(ResumeError, match="other settings"):
        _run(spark_session, program, out, store=store, resume=True, partitions=5)
    calls = store.calls
    res = _run(spark_session, program, out, store=store, resume=True)
    assert res.resumed_chunks == 2
    assert store.calls - calls == res.chunks - sum(
        len(r["files"]) for r in manifest["ranges"].values()
    )
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, expected)
    assert len(store.rows) == got["member_id"].nunique()
    assert set(store.rows) == set(got["decision_id"])
    assert res.budget_used == pytest.approx(ref.budget_used)
    np.testing.assert_allclose(res.money_used, ref.money_used)
