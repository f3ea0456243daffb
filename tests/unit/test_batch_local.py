"""Batch scoring on one machine: chunking, resume, holdout, budgets (synthetic send)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.batch import ResumeError, SendPlan, SyntheticScorer, parse_campaign, run_local
from serving.batch.local import parts_dir
from serving.batch.synthetic import synthetic_catalog, synthetic_members
from tests.support.batch import Crash, FakeStore

N = 600


def campaign(**over: object):
    raw: dict[str, object] = {
        "campaign_id": "cmp-1",
        "channel": "email",
        "send_date": "2026-11-01",
        "offers_per_member": 2,
        "price_sample": None,
    }
    raw.update(over)
    return parse_campaign(raw)


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "features.parquet"
    synthetic_members(N, seed=3).to_parquet(path, index=False)
    return path


def run(tmp: Path, features: Path, name: str, chunk: int, budgets: bool = True, **kw):
    camp = kw.pop("camp", None) or campaign()
    plan = SendPlan.create(camp, synthetic_catalog(12, N, seed=1, budgets=budgets))
    out = tmp / name
    result = run_local(camp, plan, SyntheticScorer(), features, out, chunk_size=chunk, **kw)
    frame = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
    return frame, result, plan


def spend(frame: pd.DataFrame, plan: SendPlan) -> tuple[np.ndarray, float]:
    """Budget used per offer (its unit) and expected money, recomputed from the file."""
    o = plan.engine.offers
    shown = frame.loc[frame["status"] == "offers"]
    j = pd.Index(list(o.ids)).get_indexer(shown["offer_id"])
    p = shown["p_redeem"].to_numpy()
    money = np.array([u == "money" for u in o.budget_unit])
    per = np.bincount(j, weights=p * np.where(money[j], o.cost[j], 1.0), minlength=o.n)
    return per, float((p * o.cost[j]).sum())


def test_chunk_size_does_not_change_the_output_without_budgets(tmp_path, features):
    a, _, _ = run(tmp_path, features, "a.parquet", 1000, budgets=False)
    b, rb, _ = run(tmp_path, features, "b.parquet", 37, budgets=False)
    assert rb.chunks == int(np.ceil(N / 37))
    pd.testing.assert_frame_equal(a, b)
    assert a["member_id"].nunique() == N


def test_chunk_size_does_not_change_the_output_with_budgets(tmp_path, features):
    # prices solved once on the whole send: the chunks apply the same prices
    a, ra, _ = run(tmp_path, features, "a.parquet", 1000)
    b, _, _ = run(tmp_path, features, "b.parquet", 100)
    assert any(v > 0 for v in ra.prices.values()), "the budgets should bind"
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("chunk", [50, 230, 1000])
def test_budgets_never_exceeded(tmp_path, features, chunk):
    # prices from a small sample (10%) are off; the carried budget still holds every limit
    camp = campaign(price_sample=60, total_money=150.0)
    frame, result, plan = run(tmp_path, features, "s.parquet", chunk, camp=camp)
    per, money = spend(frame, plan)
    limit = plan.budget_left
    has = np.isfinite(limit)
    assert has.sum() >= 3
    assert (per[has] <= limit[has] + 1e-6).all()
    assert money <= 150.0 + 1e-6
    np.testing.assert_allclose(per, result.budget_used, rtol=1e-9, atol=1e-9)
    assert money == pytest.approx(result.money_used)


def test_holdout_share_and_rows(tmp_path):
    n = 4000
    path = tmp_path / "f.parquet"
    synthetic_members(n, seed=5).to_parquet(path, index=False)
    camp = campaign(engine={"holdout": {"share": 0.1}})
    plan = SendPlan.create(camp, synthetic_catalog(12, n, budgets=False))
    run_local(camp, plan, SyntheticScorer(), path, tmp_path / "o.parquet", chunk_size=1500)
    out = pd.read_parquet(tmp_path / "o.parquet")
    held = out.loc[out["holdout"]]
    assert held["member_id"].is_unique
    assert held["offer_id"].isna().all() and (held["rank"] == 0).all()
    assert not out.loc[~out["holdout"], "member_id"].isin(held["member_id"]).any()
    share = len(held) / n
    assert abs(share - 0.1) < 3 * np.sqrt(0.1 * 0.9 / n)


def test_resume_after_crash_gives_the_same_file_and_no_duplicates(tmp_path, features):
    ref, _, _ = run(tmp_path, features, "ref.parquet", 100, store=FakeStore())

    def crash_after_2(k: int, _done: int) -> None:
        if k == 2:
            raise Crash

    store = FakeStore()
    with pytest.raises(Crash):
        run(tmp_path, features, "out.parquet", 100, store=store, on_chunk=crash_after_2)
    assert not (tmp_path / "out.parquet").exists()
    # also lose the manifest's last entry: chunk 2 is in the store but must be redone
    manifest_path = parts_dir(tmp_path / "out.parquet") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["chunks"]["2"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ResumeError, match="--resume"):
        run(tmp_path, features, "out.parquet", 100, store=store)
    out, result, _ = run(tmp_path, features, "out.parquet", 100, store=store, resume=True)
    assert result.resumed_chunks == 2
    pd.testing.assert_frame_equal(out, ref)
    assert len(store.rows) == N == out["member_id"].nunique()
    assert set(store.rows) == set(out["decision_id"])


def test_resume_refuses_another_chunk_size(tmp_path, features):
    def crash(k: int, _done: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        run(tmp_path, features, "o.parquet", 100, on_chunk=crash)
    with pytest.raises(ResumeError, match="chunk size"):
        run(tmp_path, features, "o.parquet", 50, resume=True)


def test_store_records_one_per_member(tmp_path, features):
    from serving.engine.settings import HoldoutSettings

    store = FakeStore()
    out, _, _ = run(tmp_path, features, "o.csv", 200, store=store)
    assert len(store.rows) == N
    held = out.loc[out["holdout"], "decision_id"]
    assert len(held) and all(store.rows[d]["offers"] == [] for d in held)
    # what offers export needs: the holdout flag and share, and the send's campaign
    assert all(store.rows[d]["held_out"] is True for d in held)
    assert sum(r["held_out"] for r in store.rows.values()) == len(held)
    assert {r["campaign_id"] for r in store.rows.values()} == set(out["campaign_id"])
    default_share = HoldoutSettings().share  # the campaign sets none
    assert {r["holdout_share"] for r in store.rows.values()} == {default_share}
    shown = out.loc[out["status"] == "offers"]
    d = shown["decision_id"].iloc[0]
    ranks = [o["rank"] for o in store.rows[d]["offers"]]
    assert ranks == sorted(shown.loc[shown["decision_id"] == d, "rank"].tolist())
    assert store.rows[d]["model_versions"] == {"synthetic": "factors-v1"}


def test_surprise_budget_is_shared_by_the_whole_send(tmp_path, features):
    free, _, _ = run(tmp_path, features, "free.parquet", 50, budgets=False)
    surprises = free.loc[free["is_surprise"].astype(bool), "expected_cost"].sum()
    assert surprises > 1.0
    camp = campaign(engine={"surprise": {"budget": surprises / 3}})
    out, _, _ = run(tmp_path, features, "cap.parquet", 50, budgets=False, camp=camp)
    spent = out.loc[out["is_surprise"].astype(bool), "expected_cost"].sum()
    assert 0 < spent <= surprises / 3 + 1e-9


def test_resume_with_the_sql_store_records_each_decision_once(tmp_path, features):
    from sqlalchemy import func, select

    from serving.store import open_store
    from serving.store.tables import decisions

    store = open_store(f"sqlite:///{tmp_path / 'offers.db'}")
    try:

        def crash(k: int, _done: int) -> None:
            if k == 1:
                raise Crash

        with pytest.raises(Crash):
            run(tmp_path, features, "o.parquet", 200, store=store, on_chunk=crash)
        manifest_path = parts_dir(tmp_path / "o.parquet") / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        del manifest["chunks"]["1"]  # chunk 1 reached the store, not the manifest
        manifest_path.write_text(json.dumps(manifest))
        out, result, _ = run(tmp_path, features, "o.parquet", 200, store=store, resume=True)
        assert result.stored == 200  # chunks 1 and 2 redone; chunk 1 ids were skipped
        with store.engine.connect() as c:
            count = c.execute(select(func.count()).select_from(decisions)).scalar_one()
        assert count == N == out["member_id"].nunique()
        d = out.loc[out["status"] == "offers", "decision_id"].iloc[0]
        assert store.get_decision(d)["offers"][0]["rank"] == 1
    finally:
        store.close()
