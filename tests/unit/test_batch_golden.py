"""Golden output of a whole local send (prices solved on a sample, chunks, budgets carried):
the file is byte-identical to the one recorded before the batch path was sped up."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from serving.batch import SendPlan, SyntheticScorer, parse_campaign, run_local
from serving.batch.synthetic import synthetic_catalog, synthetic_members

N = 2000

GOLDEN = {
    (None, 700): "35b728676b37f99d1c4ed74f23873d4e0643c2d3803854b1be007843dfbbb3d0",
    (900, 512): "9688d4faa958d6964a275232b9529ed4d26fd8594a15426ade448f159963fbc7",
}


@pytest.mark.parametrize(("sample", "chunk"), list(GOLDEN))
def test_send_file_is_byte_identical_to_the_recorded_one(tmp_path, sample, chunk):
    features = tmp_path / "features.parquet"
    synthetic_members(N, seed=5).to_parquet(features, index=False)
    camp = parse_campaign(
        {
            "campaign_id": "golden",
            "channel": "email",
            "send_date": "2026-11-01",
            "offers_per_member": 3,
            "price_sample": sample,
            "total_money": 900.0,
        }
    )
    plan = SendPlan.create(camp, synthetic_catalog(12, N, seed=2))
    out = tmp_path / "send.parquet"
    run_local(camp, plan, SyntheticScorer(), features, out, chunk_size=chunk)
    frame = pd.read_parquet(out)
    assert frame["status"].isin(["offers", "held_out", "no_offer"]).all()
    h = hashlib.sha256()
    h.update(repr([str(t) for t in frame.dtypes]).encode())
    h.update(frame.to_csv(index=False, float_format="%.17g").encode())
    assert h.hexdigest() == GOLDEN[(sample, chunk)]
