"""Batch-scoring builders: a simulated program with its feature snapshot, an e-mail campaign,
and a store stand-in with the bulk insert's semantics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.pipeline.output import write_member_snapshot
from features.sim.simulate import simulate
from serving.batch import parse_campaign

SEND = "2026-10-31"


def build_batch_program(out: Path) -> tuple[Path, Path]:
    """A simulated program of 2,000 members and its e-mail feature snapshot at ``SEND``."""
    simulate(n_members=2_000, seed=11).write(out)
    feats = out / "features.parquet"
    n = write_member_snapshot(out, pd.Timestamp(SEND), feats)
    assert n > 1000
    return out, feats


def campaign(**over: object):
    raw = {
        "campaign_id": "nov-spark",
        "channel": "email",
        "send_date": SEND,
        "offers_per_member": 2,
        "price_sample": None,
    }
    raw.update(over)
    return parse_campaign(raw)


class FakeStore:
    """The store's bulk insert semantics: a repeated decision id is skipped."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.calls = 0

    def log_decisions(self, records) -> int:
        self.calls += 1
        new = 0
        for r in records:
            if r["decision_id"] not in self.rows:
                self.rows[r["decision_id"]] = dict(r)
                new += 1
        return new


class Crash(RuntimeError):
    pass
