"""Checkout sessions in the serving process: in-flight dedupe by transaction id, the answer
stored with the reservations, and the background sweep.

A checkout with a ``transaction_id`` already being decided in this process waits for that
decision and gets the same answer (nothing new is reserved); across processes and replicas the
session's primary key in the store does the same (the second insert finds the first and its
request reads the stored answer). See docs/serving.md "Checkout sessions".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from anyio import to_thread

from serving.api.grants import plan_grant, valid_until
from serving.engine.decision import Decision, Reward
from serving.engine.state import PastGrant
from serving.store import GrantRequest, SessionRecord

__all__ = [
    "InFlight",
    "TransactionConflict",
    "basket_items",
    "build_request",
    "lines_total",
    "redeemed_grants",
    "run_sweeper",
    "start_sweeper",
    "stop_sweeper",
    "total_mismatch",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


class TransactionConflict(RuntimeError):
    """The transaction id is already used for another member."""

    def __init__(self, transaction_id: str, member_id: str) -> None:
        super().__init__(
            f"transaction_id {transaction_id!r} belongs to another member than {member_id!r}"
        )


class InFlight:
    """Checkouts being decided in this process, by transaction id."""

    def __init__(self) -> None:
        self._tasks: dict[str, tuple[str, asyncio.Future[Any]]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, transaction_id: str, member_id: str, make: Callable[[], Awaitable[T]]) -> T:
        """``make()`` once per transaction id at a time; concurrent duplicates await the same
        result. The work runs as its own task: a client that goes away does not cancel it."""
        entry = self._tasks.get(transaction_id)
        if entry is not None:
            if entry[0] != member_id:
                raise TransactionConflict(transaction_id, member_id)
            return await asyncio.shield(entry[1])
        task = asyncio.ensure_future(make())
        self._tasks[transaction_id] = (member_id, task)
        task.add_done_callback(lambda t: self._done(transaction_id, t))
        return await asyncio.shield(task)

    def _done(self, transaction_id: str, task: asyncio.Future[Any]) -> None:
        self._tasks.pop(transaction_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters may all have gone


def lines_total(basket: Any) -> float:
    """Sum of quantity x unit_price over the basket lines."""
    return float(sum(line.quantity * line.unit_price for line in basket))


def basket_items(basket: Any) -> tuple[str, ...]:
    """The basket's categories and products as affinity item keys (``category:coffee``,
    ``product:<sku>``), distinct and sorted: what the bundle folds into the member's affinity."""
    keys = {f"category:{line.category}" for line in basket if line.category}
    keys |= {f"product:{line.sku}" for line in basket if line.sku}
    return tuple(sorted(keys))


def total_mismatch(total: float, lines: float) -> bool:
    """True when ``total`` differs from the lines' sum by more than max(0.01, 1%)."""
    return abs(total - lines) > max(0.01, 0.01 * abs(lines))


def build_request(
    *,
    transaction_id: str,
    member_id: str,
    channel: str,
    decision: Decision,
    response: dict[str, Any],
    bundle: Any,
    counters: frozenset[str],
    now: datetime,
    client_ts: datetime | None,
) -> GrantRequest:
    """The group-commit request of one checkout: its reservations (caps and budgets) and its
    session row with the answer (``response["rewards"]`` aligned with the decision's offers)."""
    offers = decision["offers"]
    items = plan_grant(
        member_id, offers, bundle=bundle, counters=counters, channel=channel, now=now
    )
    table = bundle.engine.offers
    ends = tuple(valid_until(table, table.ids.index(x["offer_id"]), now) for x in offers)
    session = SessionRecord(
        transaction_id=transaction_id,
        member_id=member_id,
        decision_id=decision["decision_id"],
        channel=channel,
        response=response,
        valid_until=ends,
        surprise=tuple(bool(x["surprise"]) for x in offers),
        client_ts=client_ts,
    )
    return GrantRequest(tuple(items), session)


def past_grants(
    offers: Sequence[Reward], channel: str, now: datetime, decision_id: str | None = None
) -> list[PastGrant]:
    """The history entries of rewards just granted (by decision ``decision_id``)."""
    return [
        PastGrant(x["offer_id"], channel, now, bool(x["surprise"]), False, decision_id)
        for x in offers
    ]


async def run_sweeper(state: Any, interval: float, open_seconds: float, **batching: Any) -> None:
    """Every ``interval`` seconds: release expired grants and abandoned open sessions
    (``OffersStore.sweep_sessions``, with ``batching``: its ``batch`` and ``pause``) and forget
    the members concerned from the history cache. Runs until cancelled; a failed sweep is
    logged and tried again next time."""
    sweep = functools.partial(state.store.sweep_sessions, open_seconds, **batching)
    while True:
        await asyncio.sleep(interval)
        try:
            result = await to_thread.run_sync(sweep)
        except Exception as exc:
            log.error("checkout sweep failed: %s: %s", type(exc).__name__, exc)
            continue
        if state.history is not None and result.members:
            state.history.invalidate(result.members)


async def redeemed_grants(state: Any, events: Sequence[Any], stored: Sequence[str]) -> None:
    """Mark the grants of newly stored ``redeemed`` events redeemed (they then stay counted
    through cancels and the sweep). A failure is logged: the events are stored either way."""
    new = set(stored)
    redemptions = [
        (e.member_id, e.offer_id, e.decision_id)
        for e in events
        if e.event == "redeemed" and e.event_id in new
    ]
    if not redemptions or state.store is None:
        return
    try:
        await to_thread.run_sync(state.store.mark_redeemed, redemptions)
    except Exception as exc:
        log.error("redeemed grants not marked: %s: %s", type(exc).__name__, exc)
        return
    if state.history is not None:
        state.history.invalidate({m for m, _o, _d in redemptions})


def start_sweeper(
    state: Any, interval: float, open_seconds: float, **batching: Any
) -> asyncio.Task | None:
    """The background sweep for the app's lifespan (None when ``interval`` is 0)."""
    if interval <= 0 or state.store is None:
        return None
    return asyncio.create_task(
        run_sweeper(state, interval, open_seconds, **batching), name="sweeper"
    )


async def stop_sweeper(task: asyncio.Task | None) -> None:
    """Cancel the background sweep (a sweep in progress finishes in its thread)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
