"""The same batch scoring over a Spark members table (``mapInPandas``).

The driver solves the budget prices once on the price sample (as the local engine does) and
broadcasts the plan (engine, prices, budgets) and the scorer (the models) to the executors.
Members are hash-partitioned by id; each partition is decided as one pandas frame at those
fixed prices. Partitions run in parallel, so no count can be carried from one to the next:

1. pass 1 (``partition_demand``): each partition reports what it would spend at the prices with
   no budget binding;
2. the driver splits every budget into per-partition quotas in proportion to that demand
   (``quotas``; slack is spread by members); the quotas add up to the budget;
3. pass 2 (``decide_partition``): each partition is decided within its quota (the engine's
   final budget pass cuts in order of adjusted value if it must).

So the send never exceeds a budget, and when the whole send fits at the prices (prices solved
on all members) nothing is cut and the decisions equal the local engine's. The price of this is
scoring twice (pass 1 returns only a usage vector per partition).

Member features come as a Parquet file (``spark.read.parquet``) or any Spark DataFrame with
the feature columns. Memory per task is one partition: use enough partitions
(``partition_rows``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.sources.schema import MEMBER_ID
from serving.batch.campaign import Campaign
from serving.batch.local import (
    MANIFEST,
    BatchResult,
    ResumeError,
    _write_json,
    parts_dir,
    price_sample,
)
from serving.batch.output import (
    OUTPUT_COLUMNS,
    assemble,
    output_format,
    output_frame,
    store_records,
)
from serving.batch.plan import SendPlan, surprise_spend, usage
from serving.batch.scorers import Scorer
from serving.engine import state_from_events

__all__ = ["SPARK_SCHEMA", "decide_partition", "run_spark"]

log = logging.getLogger(__name__)

_BIG = 1e18

_TYPES = {
    "rank": "int",
    "holdout": "boolean",
    "explored": "boolean",
    "is_surprise": "boolean",
    **{
        c: "double"
        for c in (
            "p_redeem",
            "incremental_margin",
            "uplift_adjusted_margin",
            "expected_cost",
            "eiv",
            "lifecycle_boost",
            "rank_score",
            "shadow_price",
            "propensity",
        )
    },
}
SPARK_SCHEMA = ", ".join(f"{c} {_TYPES.get(c, 'string')}" for c in OUTPUT_COLUMNS)


def _partition_id() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        raise RuntimeError("not inside a Spark task")
    return ctx.partitionId()


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for c, t in _TYPES.items():
        if t == "double":
            out[c] = out[c].astype(np.float64)
        elif t == "int":
            out[c] = out[c].astype(np.int32)
        else:
            out[c] = out[c].astype(bool)
    return out


def _unlimited(plan: SendPlan) -> tuple[np.ndarray, float | None, float | None]:
    """Budgets that never bind (a budget keeps its name and price; 0 stays 0: not allowed)."""
    left = np.where(np.isfinite(plan.budget_left) & (plan.budget_left > 0), _BIG, plan.budget_left)
    total = None if plan.total_money is None else _BIG
    surprise = None if plan.engine.settings.surprise.budget is None else _BIG
    return left, total, surprise


def _state(frame: pd.DataFrame, plan: SendPlan, events: pd.DataFrame | None) -> Any:
    if events is None:
        return None
    ids = frame[MEMBER_ID].astype(str).to_numpy(dtype=object)
    period = plan.engine.settings.caps.period_days
    return state_from_events(events, ids, plan.engine.offers, plan.context.as_of, period)


def partition_demand(
    frame: pd.DataFrame, plan: SendPlan, scorer: Scorer, events: pd.DataFrame | None = None
) -> np.ndarray:
    """Pass 1: what the partition would spend at the fixed prices with no budget binding:
    ``[per offer..., money, surprise, members]``."""
    left, total, surprise = _unlimited(plan)
    state = _state(frame, plan, events)
    rows = plan.decide(frame, scorer, left, total, state, surprise_left=surprise, frame=False).rows
    per, money = usage(rows, plan.engine)
    return np.concatenate([per, [money, surprise_spend(rows), len(frame)]])


def quotas(plan: SendPlan, demand: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Split every budget over the partitions in proportion to their demand at the prices;
    what no partition asks for is spread by members. Quotas add up to each budget, and a
    partition gets at least its demand whenever the whole send fits (then nothing is cut and
    the decisions equal the local engine's)."""
    m = plan.engine.offers.n
    sb = plan.engine.settings.surprise.budget
    limit = np.concatenate(
        [
            plan.budget_left,
            [np.inf if plan.total_money is None else plan.total_money],
            [np.inf if sb is None else sb],
        ]
    )
    pids = sorted(demand)
    D = np.vstack([demand[p] for p in pids])  # (partitions, m + 3)
    members = D[:, -1] / max(D[:, -1].sum(), 1.0)
    want = D[:, : m + 2]
    total = want.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        short = np.where(total > 0, want * (limit / total)[None, :], 0.0)
    fits = want + np.maximum(limit - total, 0.0)[None, :] * members[:, None]
    q = np.where((total <= limit)[None, :], fits, short)
    q = np.where(np.isfinite(limit)[None, :], q, limit[None, :])
    return {p: q[r] for r, p in enumerate(pids)}


def decide_partition(
    frame: pd.DataFrame,
    plan: SendPlan,
    scorer: Scorer,
    quota: np.ndarray,
    events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Pass 2: decisions for one partition within its quota of every budget."""
    m = plan.engine.offers.n
    total = None if plan.total_money is None else float(quota[m])
    surprise = None if plan.engine.settings.surprise.budget is None else float(quota[m + 1])
    state = _state(frame, plan, events)
    batch = plan.decide(frame, scorer, quota[:m], total, state, surprise_left=surprise)
    return _typed(output_frame(batch.rows))


def run_spark(
    spark: Any,
    campaign: Campaign,
    plan: SendPlan,
    scorer: Scorer,
    features: Path,
    out: Path,
    store: Any = None,
    partition_rows: int = 100_000,
    partitions: int | None = None,
    events: pd.DataFrame | None = None,
    resume: bool = False,
    ranges: int = 4,
    on_range: Callable[[int, int], None] | None = None,
) -> BatchResult:
    """Score the members of ``features`` on Spark into ``out`` (see the module docstring).

    ``events``: canonical ``offer_events`` for the per-member caps (broadcast with the plan).
    Pass 2 runs as ``ranges`` Spark jobs over consecutive partition ranges, each written to
    ``<out>.parts/spark/range-<lo>-<hi>/`` and then recorded in the manifest (with the prices
    and quotas); ``resume`` skips the recorded ranges (see docs/batch.md). ``on_range(k,
    members_done)`` is called after range ``k`` is recorded (tests raise from it).
    """
    output_format(out)
    if ranges < 1:
        raise ValueError(f"ranges: {ranges} must be >= 1")
    n = pq.ParquetFile(features).metadata.num_rows
    want = partitions or max(1, math.ceil(n / partition_rows))
    pdir = parts_dir(out) / "spark"
    manifest_path = pdir / MANIFEST
    key = {
        "campaign": json.loads(campaign.fingerprint()),
        "members": n,
        "partitions": want,
        "policy": plan.engine.settings.fingerprint(),
        "versions": scorer.versions,
    }
    manifest: dict[str, Any] | None = None
    if manifest_path.is_file():
        if not resume:
            raise ResumeError(f"{pdir} holds an earlier run: pass --resume or delete it")
        manifest = json.loads(manifest_path.read_text())
        if manifest["key"] != key:
            raise ResumeError(
                f"{pdir}: the earlier run had other settings (campaign, partitions, members, "
                "policy or model versions); delete it to start over"
            )
        plan.prices = manifest["prices"]
    elif pdir.exists():
        shutil.rmtree(pdir)  # an earlier run that did not get past pass 1
    df = spark.read.parquet(str(features))
    sc = spark.sparkContext
    if not os.environ.get("PYSPARK_PYTHON") and sc.master.startswith("local"):
        # local workers run this interpreter (its packages); on a cluster set PYSPARK_PYTHON
        sc.pythonExec = sys.executable
    # hash partitioning: the same partitions in both passes and in a resumed run
    df = df.repartition(want, MEMBER_ID).persist()
    shared = None
    try:
        if manifest is None:
            sample, rate = price_sample(features, n, campaign.price_sample)
            plan.solve_prices(sample, rate, scorer)
            del sample
            shared = sc.broadcast((plan, scorer, events))
            split_q = _pass1(df, shared, plan)
            pdir.mkdir(parents=True, exist_ok=True)
            manifest = {
                "key": key,
                "prices": plan.prices,
                "sample_rate": rate,
                "quotas": {str(p): q.tolist() for p, q in split_q.items()},
                "ranges": {},
            }
            _write_json(manifest_path, manifest)
        else:
            shared = sc.broadcast((plan, scorer, events))
        split = sc.broadcast({int(p): np.asarray(q) for p, q in manifest["quotas"].items()})
        m = plan.engine.offers.n
        used, money, surprise, stored = np.zeros(m), 0.0, 0.0, 0
        for rec in manifest["ranges"].values():
            used += np.asarray(rec["used"])
            money += rec["money"]
            surprise += rec["surprise"]
        resumed = len(manifest["ranges"])
        step = math.ceil(want / min(ranges, want))
        files: list[Path] = []
        done = sum(r["members"] for r in manifest["ranges"].values())
        for k, lo in enumerate(range(0, want, step)):
            hi = min(lo + step, want)
            name = f"range-{lo:05d}-{hi:05d}"
            rdir = pdir / name
            if name in manifest["ranges"]:
                files += [rdir / f for f in manifest["ranges"][name]["files"]]
                continue
            if rdir.exists():
                shutil.rmtree(rdir)
            _pass2(df, shared, split, lo, hi).write.parquet(str(rdir))
            got = [  # Spark may leave empty files for the partitions out of the range
                f
                for f in sorted(rdir.glob("part-*.parquet"))
                if pq.ParquetFile(f).metadata.num_rows > 0
            ]
            rec = {"files": [f.name for f in got], "rows": 0, "members": 0, "money": 0.0}
            r_used, r_surprise = np.zeros(m), 0.0
            for f in got:
                frame = pd.read_parquet(f)
                u, mo = usage(frame, plan.engine)
                r_used += u
                rec["money"] += mo
                r_surprise += surprise_spend(frame)
                rec["rows"] += len(frame)
                rec["members"] += int(frame[MEMBER_ID].nunique())
                if store is not None:
                    stored += store.log_decisions(
                        store_records(
                            frame, plan.context.channel, plan.engine.settings.holdout.share
                        )
                    )
            rec |= {"used": r_used.tolist(), "surprise": r_surprise}
            used += r_used
            money += rec["money"]
            surprise += r_surprise
            manifest["ranges"][name] = rec
            _write_json(manifest_path, manifest)
            files += got
            done += rec["members"]
            if on_range is not None:
                on_range(k, done)
        split.unpersist()
    finally:
        if shared is not None:
            shared.unpersist()
        df.unpersist()
    rows = assemble(files, out)
    limit = np.where(np.isfinite(plan.budget_left), plan.budget_left, np.nan)
    return BatchResult(
        members=n,
        rows=rows,
        chunks=len(files),
        resumed_chunks=resumed,
        prices=dict(plan.prices or {}),
        budget_used=used.tolist(),
        budget_left=(limit - used).tolist(),
        money_used=money,
        stored=stored,
        extra={
            "sample_rate": manifest.get("sample_rate"),
            "partitions": want,
            "surprise": surprise,
            "parts": str(pdir),
        },
    )


def _whole(batches: Iterator[pd.DataFrame]) -> pd.DataFrame:
    parts = list(batches)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _pass1(df: Any, shared: Any, plan: SendPlan) -> dict[int, np.ndarray]:
    """Every partition's demand at the fixed prices -> per-partition quotas."""

    def demand(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frame = _whole(batches)
        if len(frame):
            plan_, scorer_, events_ = shared.value
            d = partition_demand(frame, plan_, scorer_, events_)
            yield pd.DataFrame({"pid": [_partition_id()], "demand": [d.tolist()]})

    got = df.mapInPandas(demand, schema="pid int, demand array<double>").collect()
    return quotas(plan, {r["pid"]: np.asarray(r["demand"]) for r in got})


def _pass2(df: Any, shared: Any, split: Any, lo: int, hi: int) -> Any:
    """Decisions of the partitions ``lo <= id < hi`` (the others yield nothing)."""

    def decide(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        pid = _partition_id()
        if not lo <= pid < hi:
            for _ in batches:
                pass
            return
        frame = _whole(batches)
        if len(frame):
            plan_, scorer_, events_ = shared.value
            yield decide_partition(frame, plan_, scorer_, split.value[pid], events_)

    return df.mapInPandas(decide, schema=SPARK_SCHEMA)
