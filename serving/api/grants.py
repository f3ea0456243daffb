"""Group-committed grant reservations for checkout rewards.

``GrantService.grant`` has the semantics of one-reservation-per-transaction granting (a
surprise first counts against the member's yearly surprise cap; an offer with a budget
counter then reserves its cost (money budgets) or 1; a spent budget skips the offer and
reports it exhausted), but every request waiting while a commit is in flight joins the next
group: ONE background writer thread runs the whole group's conditional UPDATEs in one
transaction and commits once (one fsync on SQLite, one round trip of COMMIT on PostgreSQL).
A request is answered only after its group committed; when the commit fails every request of
the group fails with :class:`GrantCommitError` and none was reserved.

Usage (in the app lifespan)::

    state.grants = GrantService(state.store, on_exhausted=state.bundle.mark_exhausted)
    ...
    granted = await state.grants.grant(member_id, offers, bundle=bundle,
                                       counters=state.budget_counters)
    ...
    await to_thread.run_sync(state.grants.close)  # drains, before store.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from serving.engine.decision import Reward
from serving.store import (
    CapKey,
    GrantOutcome,
    GrantRequest,
    OffersStore,
    ReservationItem,
    utcnow,
)

__all__ = [
    "Backlog",
    "GrantCommitError",
    "GrantService",
    "GrantServiceClosed",
    "GrantStats",
    "frequency_period",
    "plan_grant",
    "valid_until",
]

log = logging.getLogger(__name__)

SURPRISE_CAP_KEY = "surprise"
NO_CAP = 2**31 - 1  # OfferTable.per_member_cap of an offer without a cap
_EPOCH = datetime(1970, 1, 1)
_NO_END = np.datetime64("2999-01-01", "D")  # OfferTable's far-future validity: none


class GrantServiceClosed(RuntimeError):
    """The service is shutting down and takes no new requests."""


class GrantCommitError(RuntimeError):
    """The group's transaction failed: nothing of this request was reserved."""


@dataclass
class GrantStats:
    """Counters since start: requests answered, transactions committed, failed groups, the
    largest group and the seconds spent in group transactions (commit included)."""

    requests: int = 0
    commits: int = 0
    failed_groups: int = 0
    largest_group: int = 0
    transaction_seconds: float = 0.0


def frequency_period(now: datetime, period_days: float) -> str:
    """The channel frequency cap's bucket holding ``now``: fixed windows of ``period_days``
    counted from 1970-01-01 00:00 UTC (7 days: Thursday to Wednesday), e.g. ``"7d-2946"``.
    A grant counts in the bucket of its grant time; a new bucket starts from zero."""
    days = (now - _EPOCH).total_seconds() / 86_400.0
    return f"{period_days:g}d-{int(days // period_days)}"


def valid_until(offers: Any, j: int, granted_at: datetime) -> datetime | None:
    """When the grant of offer ``j`` at ``granted_at`` stops being redeemable: the end of the
    offer's validity (``valid_to`` inclusive) or ``duration_days`` after the grant, whichever
    is first; None when the offer has neither."""
    ends = []
    to = getattr(offers, "valid_to", None)
    if to is not None and to[j] < _NO_END:
        ends.append(datetime.fromisoformat(str(to[j] + np.timedelta64(1, "D"))))
    duration = getattr(offers, "duration_days", None)
    if duration is not None and np.isfinite(duration[j]):
        ends.append(granted_at + timedelta(days=float(duration[j])))
    return min(ends) if ends else None


def plan_grant(
    member_id: str,
    offers: Sequence[Reward],
    *,
    bundle: Any,
    counters: Iterable[str] | frozenset[str],
    period: str | None = None,
    channel: str | None = None,
    now: datetime | None = None,
) -> list[ReservationItem]:
    """The reservations granting ``offers`` needs, one item per offer in order.

    ``bundle`` is the serving bundle whose engine decided the offers (catalog costs, budget
    units, per-member caps, the yearly surprise cap and the channel frequency caps);
    ``counters`` the offer ids with a budget counter in the store; ``period`` the surprise cap
    period (default: this UTC year). Caps counted per item: the yearly surprise cap (``cap``),
    the offer's lifetime ``per_member_cap`` (cap key ``offer:<id>``, period ``all``) and, for
    ``channel``, ``caps.per_channel[channel]`` per :func:`frequency_period` bucket.
    """
    o = bundle.engine.offers
    settings = bundle.engine.settings
    cap = int(settings.surprise.yearly_cap)
    now = now or utcnow()
    period = period or str(now.year)
    per_member = getattr(o, "per_member_cap", None)
    caps_settings = getattr(settings, "caps", None)
    channel_cap = None
    if channel is not None and caps_settings is not None:
        limit = caps_settings.per_channel.get(channel)
        if limit is not None:
            bucket = frequency_period(now, float(caps_settings.period_days))
            channel_cap = CapKey(member_id, f"channel:{channel}", bucket, int(limit))
    items = []
    for x in offers:
        offer_id = x["offer_id"]
        j = o.ids.index(offer_id)
        cap_key = CapKey(member_id, SURPRISE_CAP_KEY, period, cap) if x["surprise"] else None
        more: list[CapKey] = []
        if per_member is not None and int(per_member[j]) < NO_CAP:
            more.append(CapKey(member_id, f"offer:{offer_id}", "all", int(per_member[j])))
        if channel_cap is not None:
            more.append(channel_cap)
        amount = None
        if offer_id in counters:
            amount = float(o.cost[j]) if o.budget_unit[j] == "money" else 1.0
        items.append(ReservationItem(offer_id, cap=cap_key, amount=amount, caps=tuple(more)))
    return items


@dataclass(slots=True)
class _Pending:
    items: GrantRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[GrantOutcome]
    queued_at: float  # GrantService.clock() when queued


@dataclass(frozen=True, slots=True)
class Backlog:
    """The writer's backlog now: ``queued`` reservations not yet taken by the writer, and
    ``oldest_wait`` seconds since the oldest reservation not yet committed (queued or in the
    group being committed) was queued; 0.0 when there is none."""

    queued: int
    oldest_wait: float


class GrantService:
    """One writer thread committing grant reservations in groups (see the module docstring).

    ``on_exhausted(offer_ids)`` is called (from the writer thread, once per group) with the
    offers whose budget was found spent. ``max_group`` bounds the requests in one transaction.
    ``clock`` (monotonic seconds) times the backlog (:meth:`backlog`; tests pass their own).
    """

    def __init__(
        self,
        store: OffersStore,
        *,
        on_exhausted: Callable[[set[str]], None] | None = None,
        max_group: int = 512,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be >= 1, got {max_group}")
        self.store = store
        self.on_exhausted = on_exhausted
        self.max_group = max_group
        self.stats = GrantStats()
        self.clock = clock
        self._pending: deque[_Pending] = deque()
        self._committing_since: float | None = None  # queued_at of the group's oldest
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="grant-writer", daemon=True)
        self._thread.start()

    # -- request side (event loop) --------------------------------------------------------
    async def reserve(self, items: GrantRequest | Sequence[ReservationItem]) -> GrantOutcome:
        """Queue one request's reservations (with its checkout session, if any) and wait for
        its group's commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GrantOutcome] = loop.create_future()
        request = items if isinstance(items, GrantRequest) else GrantRequest(tuple(items))
        with self._cond:
            if self._closing:
                raise GrantServiceClosed("grant service is shutting down")
            self._pending.append(_Pending(request, loop, future, self.clock()))
            self._cond.notify()
        # Once queued, the reservation is committed whatever happens to the caller; a cancelled
        # request (client gone) only stops waiting, the future stays for the writer to settle.
        # Such a reward is reserved and its session stored: the till's retry with the same
        # transaction id gets it, or the sweep releases it.
        return await asyncio.shield(future)

    async def grant(
        self,
        member_id: str,
        offers: list[Reward],
        *,
        bundle: Any,
        counters: Iterable[str] | frozenset[str],
    ) -> list[Reward]:
        """The offers granted to ``member_id`` (a subset of ``offers``, same order), durable.

        Raises :class:`GrantCommitError` when the group's commit failed,
        :class:`~serving.store.UnknownBudgetError` when an offer has no budget counter in the
        store, :class:`GrantServiceClosed` after :meth:`close`.
        """
        if not offers:
            return []
        items = plan_grant(member_id, offers, bundle=bundle, counters=counters)
        if not any(i.reserves for i in items):
            return list(offers)  # nothing to reserve: no transaction
        outcome = await self.reserve(items)
        if outcome.error is not None:
            raise outcome.error
        return [offers[i] for i in outcome.granted]

    # -- writer side (thread) -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return  # closing and drained
                n = min(self.max_group, len(self._pending))
                group = [self._pending.popleft() for _ in range(n)]
                self._committing_since = group[0].queued_at  # FIFO: the oldest
            try:
                self._commit(group)
            except Exception:  # never leave a request waiting forever
                log.exception("grant writer failed on a group of %d", len(group))
                failure = [(p, GrantCommitError("grant writer failed")) for p in group]
                for p, exc in failure:
                    with contextlib.suppress(RuntimeError):
                        p.loop.call_soon_threadsafe(_settle, [(p.future, exc)])
            finally:
                with self._cond:
                    self._committing_since = None

    def _commit(self, group: list[_Pending]) -> None:
        results: list[GrantOutcome | BaseException]
        started = time.perf_counter()
        try:
            results = list(self.store.reserve_grants([p.items for p in group]))
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} outcomes for {len(group)} requests")
        except Exception as exc:
            log.error("grant group of %d failed: %s", len(group), type(exc).__name__)
            self.stats.failed_groups += 1
            message = f"reservation commit failed ({type(exc).__name__})"
            results = [GrantCommitError(message) for _ in group]
        else:
            self.stats.transaction_seconds += time.perf_counter() - started
            self.stats.commits += 1
            self.stats.largest_group = max(self.stats.largest_group, len(group))
            exhausted = {o for r in results if isinstance(r, GrantOutcome) for o in r.exhausted}
            if exhausted and self.on_exhausted is not None:
                try:
                    self.on_exhausted(exhausted)
                except Exception:
                    log.exception("on_exhausted callback failed")
        self.stats.requests += len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
        for p, r in zip(group, results, strict=True):
            by_loop.setdefault(p.loop, []).append((p.future, r))
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, pairs)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.warning("grant answers for %d requests dropped: loop closed", len(pairs))

    # -- lifecycle ------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Refuse new requests, commit and answer every queued one, stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("grant writer did not drain within %.0f s", timeout)

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken by the writer."""
        return len(self._pending)

    def backlog(self) -> Backlog:
        """What is waiting for the writer now (checkout admission reads it per request)."""
        with self._cond:
            queued = len(self._pending)
            since = self._committing_since
            if since is None and queued:
                since = self._pending[0].queued_at
        return Backlog(queued, 0.0 if since is None else max(0.0, self.clock() - since))


def _settle(pairs: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in pairs:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
