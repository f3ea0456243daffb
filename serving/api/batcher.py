"""Micro-batching of real-time decisions: concurrent requests share one engine call.

The engine has a fixed cost per call (tens of milliseconds of array and frame work) and a
small cost per member, so requests that queue up while the previous engine call runs (same
channel, k and decision time) are decided together in a worker thread; the event loop never
runs the engine. A member asked twice in one batch goes to a later call (decision ids are
derived from the request and the member).

:func:`split_decisions` turns a :class:`~serving.engine.DecisionBatch` into one plain dict per
member (offers as dicts), from column arrays: no per-row frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anyio import to_thread
from prometheus_client import CollectorRegistry, Histogram

from features import schema as S
from serving.api.bundle import BundleHolder, ServingBundle
from serving.engine import DecisionBatch, DecisionContext

__all__ = ["DecisionBatcher", "split_decisions"]

log = logging.getLogger(__name__)


def split_decisions(
    bundle: ServingBundle, batch: DecisionBatch, member_ids: list[str], k: int | None = None
) -> list[dict[str, Any]]:
    """One dict per requested member (request order): decision_id, fallback, held_out,
    explored, moments (list) and offers (list of OfferOut-shaped dicts, slot order)."""
    rows = batch.rows
    o = bundle.engine.offers
    member = rows[S.MEMBER_ID].to_numpy(dtype=object)
    status = rows["status"].to_numpy(dtype=object)
    offer = rows[S.OFFER_ID].to_numpy(dtype=object)
    decision = rows["decision_id"].to_numpy(dtype=object)
    fallback = rows["fallback"].to_numpy(dtype=object)
    explored = rows["explored"].to_numpy(dtype=bool)
    moments = rows["in_moments"].to_numpy(dtype=object)
    moment = rows["moment"].to_numpy(dtype=object)
    kind = rows[S.KIND].to_numpy(dtype=object)
    eiv = np.nan_to_num(rows["eiv"].to_numpy(dtype=np.float64))
    prop = rows["propensity"].to_numpy(dtype=np.float64)
    prop = np.where(np.isfinite(prop), np.clip(prop, 0.0, 1.0), 1.0)
    text = rows["explanation"].to_numpy(dtype=object)
    shown = status == "offers"
    j = np.where(shown, pd.Index(o.ids).get_indexer(offer), -1)
    out: dict[str, dict[str, Any]] = {}
    for r in range(len(rows)):  # rows of this request only (members x slots)
        mid = member[r]
        d = out.get(mid)
        if d is None:
            m = str(moments[r])
            d = out[mid] = {
                "decision_id": str(decision[r]),
                "fallback": str(fallback[r]),
                "held_out": status[r] == "held_out",
                "explored": False,
                "moments": [x for x in m.split(",") if x and x != "nan"],
                "offers": [],
            }
        if not shown[r] or (k is not None and len(d["offers"]) >= k):
            continue
        jj = int(j[r])
        d["explored"] = d["explored"] or bool(explored[r])
        d["offers"].append(
            {
                "offer_id": str(offer[r]),
                "name": o.names[jj][:200],
                "kind": str(kind[r]),
                "reward_value": float(o.reward_value[jj]),
                "rank": len(d["offers"]) + 1,
                "score": float(eiv[r]),
                "propensity": float(prop[r]),
                "explanation": str(text[r])[:1000],
                "reasons": [str(moment[r])] if moment[r] else [],
                "cost": float(o.cost[jj]),
                "surprise": bool(o.surprise[jj]),
                "moment": str(moment[r]) or None,
            }
        )
    return [out[m] for m in member_ids]


@dataclass
class _Pending:
    members: list[str] = field(default_factory=list)
    baskets: list[float] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)


class DecisionBatcher:
    """Coalesces single-member decisions into engine batches (see the module docstring).

    One drain task runs one engine call at a time: while it runs, new requests queue up and
    the next call takes them all (up to ``max_batch`` per call), so the batch size adapts to
    the load and the engine's fixed cost is paid once per batch, not once per request.
    """

    def __init__(
        self,
        holder: BundleHolder,
        window_seconds: float = 0.001,
        max_batch: int = 512,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.holder = holder
        self.batch_size = Histogram(
            "offers_decision_batch_size",
            "Members decided per engine call (micro-batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )
        self.engine_seconds = Histogram(
            "offers_engine_call_seconds",
            "Wall time of one engine call (worker thread)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.window = window_seconds
        self.max_batch = max_batch
        self._groups: dict[tuple, _Pending] = {}
        self._drain: asyncio.Task | None = None
        self.batches = 0
        self.decided = 0

    async def decide(
        self,
        member_id: str,
        channel: str,
        k: int | None,
        as_of: pd.Timestamp | None = None,
        basket_total: float | None = None,
    ) -> tuple[ServingBundle, dict[str, Any]]:
        """The decision for one member (with its bundle, whose versions it names)."""
        loop = asyncio.get_running_loop()
        key = (channel, k, as_of, basket_total is not None)
        future: asyncio.Future = loop.create_future()
        group = self._groups.setdefault(key, _Pending())
        group.members.append(member_id)
        group.baskets.append(np.nan if basket_total is None else float(basket_total))
        group.futures.append(future)
        if self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._drain_loop())
        return await future

    async def _drain_loop(self) -> None:
        while self._groups:
            await asyncio.sleep(self.window)
            groups, self._groups = self._groups, {}
            for key, group in groups.items():
                for part in _parts(group, self.max_batch):
                    await self._run(key, part)

    async def _run(self, key: tuple, group: _Pending) -> None:
        channel, k, as_of, with_basket = key
        try:
            bundle = self.holder.current
            if bundle is None:
                raise RuntimeError("models not loaded")
            when = as_of if as_of is not None else pd.Timestamp.now("UTC").tz_localize(None)
            ctx = DecisionContext(channel, when, uuid.uuid4().hex, k=k)
            baskets = np.asarray(group.baskets) if with_basket else None
            exhausted = self.holder.exhausted

            def work() -> list[dict[str, Any]]:
                t0 = time.perf_counter()
                batch = bundle.decide(group.members, ctx, basket_total=baskets, exhausted=exhausted)
                out = split_decisions(bundle, batch, group.members, k)
                self.engine_seconds.observe(time.perf_counter() - t0)
                return out

            results = await to_thread.run_sync(work)
            self.batches += 1
            self.batch_size.observe(len(results))
            self.decided += len(results)
            for future, result in zip(group.futures, results, strict=True):
                if not future.done():
                    future.set_result((bundle, result))
        except Exception as exc:  # every waiting request gets the error (a generic 500)
            log.error("decision batch failed: %s: %s", type(exc).__name__, exc)
            for future in group.futures:
                if not future.done():
                    future.set_exception(exc)


def _parts(group: _Pending, size: int) -> list[_Pending]:
    """The group in engine calls of at most ``size`` members, none asked twice in one call
    (a repeated member moves to a later call: decision ids come from request and member)."""
    parts: list[_Pending] = []
    seen: list[set[str]] = []
    for member, basket, future in zip(group.members, group.baskets, group.futures, strict=True):
        for part, ids in zip(parts, seen, strict=True):
            if member not in ids and len(part.members) < size:
                break
        else:
            part, ids = _Pending(), set()
            parts.append(part)
            seen.append(ids)
        part.members.append(member)
        part.baskets.append(basket)
        part.futures.append(future)
        ids.add(member)
    return parts
