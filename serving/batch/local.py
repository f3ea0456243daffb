"""Chunked batch scoring on one machine: bounded memory, resumable, budgets kept globally.

Steps (see docs/batch.md):

1. member features are read chunk by chunk from a Parquet file (``iter_batches``), and scored,
   one chunk ahead in a background thread (scores do not depend on the budgets);
2. the budget prices are solved once on the price sample (``SendPlan.solve_prices``);
3. each chunk is decided at those prices with *what is left* of every budget after the chunks
   before it (a global count carried across chunks): the engine's final budget pass keeps the
   chunk within what is left, in the order of adjusted value, so the send never exceeds a budget;
4. a writer thread writes each chunk to ``<out>.parts/part-<k>.parquet`` (temporary file +
   rename) and appends it to the output's temporary file; a store thread bulk-inserts the
   chunk's decisions once the chunk before it is recorded (a repeated decision id is skipped:
   ids are deterministic from campaign id + member id), and once the part is on disk and the
   decisions stored, the manifest records the chunk and the budget it used (atomic rename).
   A resumed run appends the recorded parts and decides the rest with the budget left
   restored from the manifest, so a crash anywhere re-does at most two chunks, identically.
5. the output's temporary file is renamed to ``out`` (a reader never sees half a file).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.sources.schema import MEMBER_ID
from serving.batch.campaign import Campaign
from serving.batch.output import OUTPUT_COLUMNS, output_format, output_frame, store_records
from serving.batch.plan import SendPlan, in_price_sample, surprise_spend, usage
from serving.batch.scorers import Scorer
from serving.engine import MemberTable, state_from_events

__all__ = ["BatchResult", "ResumeError", "parts_dir", "read_chunks", "run_local"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class ResumeError(RuntimeError):
    """Parts of an earlier run that do not match this one (or exist without ``resume``)."""


@dataclass
class BatchResult:
    """What a run did: members, rows, the budgets used and left, the prices."""

    members: int
    rows: int
    chunks: int
    resumed_chunks: int
    prices: dict[str, float]
    budget_used: list[float]
    budget_left: list[float]
    money_used: float
    stored: int
    extra: dict[str, Any] = field(default_factory=dict)


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def read_chunks(
    path: Path, chunk_size: int, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Member-feature chunks of exactly ``chunk_size`` rows (the last may be shorter)."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=chunk_size, columns=columns):
        yield batch.to_pandas()


def price_sample(path: Path, n: int, sample: int | None) -> tuple[pd.DataFrame, float]:
    """The members the prices are solved on (``sample`` of ``n``; None: all) and their share."""
    rate = 1.0 if sample is None or sample >= n else sample / n
    parts = [
        c.loc[in_price_sample(c[MEMBER_ID].to_numpy(dtype=object), rate)]
        for c in read_chunks(path, 200_000)
    ]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame, rate


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def run_local(
    campaign: Campaign,
    plan: SendPlan,
    scorer: Scorer,
    features: Path,
    out: Path,
    chunk_size: int = 100_000,
    resume: bool = False,
    store: Any = None,
    events: pd.DataFrame | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> BatchResult:
    """Score every member of ``features`` (Parquet) into ``out`` (see the module docstring).

    ``on_chunk(k, rows_done)`` is called after chunk ``k`` is durably recorded (progress bars;
    tests raise from it to simulate a crash). ``events``: canonical ``offer_events`` for the
    per-member caps and cool-downs (None: no history).
    """
    output_format(out)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: {chunk_size} must be >= 1")
    n = pq.ParquetFile(features).metadata.num_rows
    pdir = parts_dir(out)
    manifest_path = pdir / MANIFEST
    key = {
        "campaign": json.loads(campaign.fingerprint()),
        "chunk_size": chunk_size,
        "members": n,
        "policy": plan.engine.settings.fingerprint(),
        "versions": scorer.versions,
    }
    if manifest_path.is_file():
        if not resume:
            raise ResumeError(f"{pdir} holds an earlier run: pass --resume or delete it")
        manifest = json.loads(manifest_path.read_text())
        if manifest["key"] != key:
            raise ResumeError(
                f"{pdir}: the earlier run had other settings (campaign, chunk size, members, "
                "policy or model versions); delete it to start over"
            )
        plan.prices = manifest["prices"]
    else:
        pdir.mkdir(parents=True, exist_ok=True)
        sample, rate = price_sample(features, n, campaign.price_sample)
        plan.solve_prices(sample, rate, scorer)
        del sample
        manifest = {"key": key, "prices": plan.prices, "sample_rate": rate, "chunks": {}}
        _write_json(manifest_path, manifest)

    m = plan.engine.offers.n
    used = np.zeros(m)
    money = surprise = 0.0
    for rec in manifest["chunks"].values():
        used += np.asarray(rec["used"])
        money += rec["money"]
        surprise += rec["surprise"]
    surprise_budget = plan.engine.settings.surprise.budget
    resumed = len(manifest["chunks"])
    stored = 0
    done_rows = sum(r["members"] for r in manifest["chunks"].values())
    writer = _OutputWriter(out)
    pending: tuple[int, Future[None], Future[int] | None, dict[str, Any]] | None = None
    # the store insert of chunk k runs in its own thread, started once chunk k - 1 is recorded
    # (so the order part k -> store k -> manifest k, and manifest k - 1 -> store k, is kept)
    inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-store")

    def record(p: tuple[int, Future[None], Future[int] | None, dict[str, Any]]) -> None:
        """Chunk k is durable once its part file is written and its decisions stored: record
        it in the manifest."""
        nonlocal done_rows, stored
        k, fut, stored_fut, rec = p
        fut.result()
        if stored_fut is not None:
            stored += stored_fut.result()
        manifest["chunks"][str(k)] = rec
        _write_json(manifest_path, manifest)
        done_rows += rec["members"]
        if on_chunk is not None:
            on_chunk(k, done_rows)

    done_before = set(manifest["chunks"])
    chunks_iter = enumerate(read_chunks(features, chunk_size))

    def prepare() -> tuple[int, MemberTable | None, Any, Any] | None:
        """Read the next chunk, score it and validate its members (runs in the background
        while the chunk before it is decided: none of this depends on the budgets)."""
        got = next(chunks_iter, None)
        if got is None:
            return None
        k, chunk = got
        if str(k) in done_before:
            return k, None, None, None
        state = None
        if events is not None:
            ids = chunk[MEMBER_ID].astype(str).to_numpy(dtype=object)
            period = plan.engine.settings.caps.period_days
            state = state_from_events(
                events, ids, plan.engine.offers, plan.context.as_of, period_days=period
            )
        inputs = scorer.score(chunk, plan.engine.offers)
        return k, plan.engine.member_table(chunk), state, inputs

    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader")
    try:
        ahead = reader.submit(prepare)
        while (item := ahead.result()) is not None:
            ahead = reader.submit(prepare)
            k, chunk, state, inputs = item
            part = pdir / f"part-{k:06d}.parquet"
            if chunk is None:
                writer.submit_part(part)
                continue
            left = np.where(
                np.isfinite(plan.budget_left),
                np.maximum(plan.budget_left - used, 0),
                plan.budget_left,
            )
            total_left = None if plan.total_money is None else max(plan.total_money - money, 0.0)
            s_left = None if surprise_budget is None else surprise_budget - surprise
            batch = plan.decide(
                chunk, scorer, left, total_left, state, surprise_left=s_left, inputs=inputs
            )
            del inputs
            u, mo = usage(batch.rows, plan.engine)
            su = surprise_spend(batch.rows)
            frame = output_frame(batch.rows)
            del batch
            # the part file and the output file are written in the background while the next
            # chunk is decided; the manifest records a chunk only once its part is on disk
            fut = writer.submit_table(pa.Table.from_pandas(frame, preserve_index=False), part)
            if pending is not None:
                record(pending)
                pending = None
            stored_fut = None
            if store is not None:

                def log_chunk(f: pd.DataFrame = frame) -> int:
                    share = plan.engine.settings.holdout.share
                    return store.log_decisions(store_records(f, plan.context.channel, share))

                stored_fut = inserter.submit(log_chunk)
            used += u
            money += mo
            surprise += su
            rec = {"members": chunk.n, "rows": len(frame), "used": u.tolist(), "money": mo}
            rec["surprise"] = su
            pending = (k, fut, stored_fut, rec)
        if pending is not None:
            record(pending)
        rows = writer.finish()
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        inserter.shutdown(wait=True)
        writer.close()
    chunks = sorted(int(c) for c in manifest["chunks"])
    limit = np.where(np.isfinite(plan.budget_left), plan.budget_left, np.nan)
    return BatchResult(
        members=n,
        rows=rows,
        chunks=len(chunks),
        resumed_chunks=resumed,
        prices=dict(plan.prices or {}),
        budget_used=used.tolist(),
        budget_left=(limit - used).tolist(),
        money_used=money,
        stored=stored,
        extra={"sample_rate": manifest.get("sample_rate"), "parts": str(pdir)},
    )


class _OutputWriter:
    """Part files and the output file, written in order by one background thread.

    ``submit_table(table, part)`` writes the part (temporary file + rename) and appends the
    table to the output's temporary file; ``submit_part(part)`` appends a part written by an
    earlier run. ``finish`` waits, closes and renames the output (a reader never sees half a
    file) and returns its row count; ``close`` stops the thread (after an error too).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.fmt = output_format(out)
        self.tmp = out.with_name(out.name + ".tmp")
        self.rows = 0
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
        self._futures: list[Future[None]] = []

    def _append(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = (
                pq.ParquetWriter(self.tmp, table.schema)
                if self.fmt == "parquet"
                else pacsv.CSVWriter(self.tmp, table.schema)
            )
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _write(self, table: pa.Table, part: Path) -> None:
        tmp = part.with_name(part.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, part)
        self._append(table)

    def submit_table(self, table: pa.Table, part: Path) -> Future[None]:
        fut = self._pool.submit(self._write, table, part)
        self._futures.append(fut)
        return fut

    def submit_part(self, part: Path) -> None:
        self._futures.append(self._pool.submit(lambda: self._append(pq.read_table(part))))

    def finish(self) -> int:
        for f in self._futures:
            f.result()
        if self._writer is None:
            empty = pa.table({c: pa.array([], pa.string()) for c in OUTPUT_COLUMNS})
            (pq.write_table if self.fmt == "parquet" else pacsv.write_csv)(empty, self.tmp)
        else:
            self._writer.close()
            self._writer = None
        self.tmp.replace(self.out)
        return self.rows

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
