"""Golden output of a whole local send (prices solved on a sample, chunks, budgets carried).

The decisions (every member's status, offers, their order, decision ids, flags, explanations)
must equal the recorded ones exactly; the floats (probabilities, margins, scores, prices) must
equal them within a relative 1e-9, so the test holds on any CPU and pandas version while a
changed decision or a moved score still fails it. The recorded values live in
``golden/batch_send.json``: decision counts, the first rows in clear (a readable diff), a
SHA-256 of the whole decision table, and per float column its NaN count, sum, index-weighted
sum, minimum and maximum.

Re-record only after a deliberate change of the decisions, and say why in the commit:
``python -m tests.unit.test_batch_golden``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from serving.batch import SendPlan, SyntheticScorer, parse_campaign, run_local
from serving.batch.synthetic import synthetic_catalog, synthetic_members

N = 2000
CASES = [(None, 700), (900, 512)]
FIXTURE = Path(__file__).with_name("golden") / "batch_send.json"
HEAD_ROWS = 40
REL = 1e-9


def _send(tmp: Path, sample: int | None, chunk: int) -> pd.DataFrame:
    features = tmp / "features.parquet"
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
    out = tmp / f"send-{sample}-{chunk}.parquet"
    run_local(camp, plan, SyntheticScorer(), features, out, chunk_size=chunk)
    return pd.read_parquet(out)


def _decision_rows(frame: pd.DataFrame) -> list[list[str]]:
    """Every non-float column as text, row by row (dtype-independent: bool 'True', int '3')."""
    columns = [c for c in frame.columns if frame[c].dtype.kind != "f"]
    text = frame[columns].astype(object).where(frame[columns].notna(), "<NA>").astype(str)
    return [columns, *text.to_numpy().tolist()]


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """What the golden file records of one send (module docstring)."""
    rows = _decision_rows(frame)
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    floats: dict[str, dict[str, float | int]] = {}
    weights = pd.Series(range(1, len(frame) + 1), index=frame.index, dtype=float) / len(frame)
    for column in frame.columns:
        if frame[column].dtype.kind != "f":
            continue
        values = frame[column]
        floats[column] = {
            "nan": int(values.isna().sum()),
            "sum": float(values.sum()),
            "weighted_sum": float((values * weights).sum()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return {
        "rows": len(frame),
        "status": {k: int(v) for k, v in frame["status"].value_counts().sort_index().items()},
        "offers": {k: int(v) for k, v in frame["offer_id"].value_counts().sort_index().items()},
        "decision_columns": rows[0],
        "head": rows[1 : HEAD_ROWS + 1],
        "decisions_sha256": digest,
        "floats": floats,
    }


def _key(sample: int | None, chunk: int) -> str:
    return f"sample={sample},chunk={chunk}"


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize(("sample", "chunk"), CASES)
def test_send_matches_the_recorded_decisions_and_scores(tmp_path, golden, sample, chunk):
    frame = _send(tmp_path, sample, chunk)
    assert frame["status"].isin(["offers", "held_out", "no_offer"]).all()
    got, want = summarize(frame), golden[_key(sample, chunk)]
    # decisions: exactly (the readable parts first, for a useful failure message)
    assert got["rows"] == want["rows"]
    assert got["status"] == want["status"]
    assert got["offers"] == want["offers"]
    assert got["decision_columns"] == want["decision_columns"]
    for i, (row, expected) in enumerate(zip(got["head"], want["head"], strict=True)):
        assert row == expected, f"row {i} differs"
    assert got["decisions_sha256"] == want["decisions_sha256"], "a decision after the head moved"
    # floats: within a relative tolerance (the last bits differ between CPUs)
    assert set(got["floats"]) == set(want["floats"])
    for column, stats in want["floats"].items():
        for name, value in stats.items():
            actual = got["floats"][column][name]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(actual), f"{column}.{name}"
            else:
                assert actual == pytest.approx(value, rel=REL, abs=REL), f"{column}.{name}"


def test_summary_sees_a_moved_score_and_a_swapped_offer():
    """The comparison can fail: one score moved by 1e-4 of its value (the sums' tolerance is
    about 3e-6 of one value) and two offers swapped are caught."""
    with tempfile.TemporaryDirectory() as tmp:
        frame = _send(Path(tmp), *CASES[0])
    base = summarize(frame)
    moved = frame.copy()
    row = int(moved["eiv"].first_valid_index())
    moved.loc[row, "eiv"] *= 1 + 1e-4
    stats = summarize(moved)["floats"]["eiv"]
    assert stats["sum"] != pytest.approx(base["floats"]["eiv"]["sum"], rel=REL, abs=REL)
    swapped = frame.copy()
    offers = swapped.index[swapped["status"] == "offers"][-2:]
    swapped.loc[offers, "offer_id"] = swapped.loc[offers[::-1], "offer_id"].to_numpy()
    assert summarize(swapped)["decisions_sha256"] != base["decisions_sha256"]


def _record() -> None:
    """Write the golden file from the current code (a deliberate re-recording)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = {_key(s, c): summarize(_send(Path(tmp), s, c)) for s, c in CASES}
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    sys.stderr.write(f"wrote {FIXTURE}\n")


if __name__ == "__main__":
    _record()
