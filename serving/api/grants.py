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
from typing import Any

from serving.store import CapKey, GrantOutcome, OffersStore, ReservationItem, utcnow

__all__ = ["GrantCommitError", "GrantService", "GrantServiceClosed", "GrantStats", "plan_grant"]

log = logging.getLogger(__name__)

SURPRISE_CAP_KEY = "surprise"


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


def plan_grant(
    member_id: str,
    offers: Sequence[dict[str, Any]],
    *,
    bundle: Any,
    counters: Iterable[str] | frozenset[str],
    period: str | None = None,
) -> list[ReservationItem]:
    """The reservations granting ``offers`` needs, one item per offer in order.

    ``bundle`` is the serving bundle whose engine decided the offers (catalog costs, budget
    units and the yearly surprise cap); ``counters`` the offer ids with a budget counter in the
    store; ``period`` the cap period (default: this UTC year).
    """
    o = bundle.engine.offers
    cap = int(bundle.engine.settings.surprise.yearly_cap)
    period = period or str(utcnow().year)
    items = []
    for x in offers:
        offer_id = x["offer_id"]
        j = o.ids.index(offer_id)
        cap_key = CapKey(member_id, SURPRISE_CAP_KEY, period, cap) if x["surprise"] else None
        amount = None
        if offer_id in counters:
            amount = float(o.cost[j]) if o.budget_unit[j] == "money" else 1.0
        items.append(ReservationItem(offer_id, cap=cap_key, amount=amount))
    return items


@dataclass(slots=True)
class _Pending:
    items: Sequence[ReservationItem]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[GrantOutcome]


class GrantService:
    """One writer thread committing grant reservations in groups (see the module docstring).

    ``on_exhausted(offer_ids)`` is called (from the writer thread, once per group) with the
    offers whose budget was found spent. ``max_group`` bounds the requests in one transaction.
    """

    def __init__(
        self,
        store: OffersStore,
        *,
        on_exhausted: Callable[[set[str]], None] | None = None,
        max_group: int = 512,
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be >= 1, got {max_group}")
        self.store = store
        self.on_exhausted = on_exhausted
        self.max_group = max_group
        self.stats = GrantStats()
        self._pending: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="grant-writer", daemon=True)
        self._thread.start()

    # -- request side (event loop) --------------------------------------------------------
    async def reserve(self, items: Sequence[ReservationItem]) -> GrantOutcome:
        """Queue one request's reservations and wait for its group's commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GrantOutcome] = loop.create_future()
        with self._cond:
            if self._closing:
                raise GrantServiceClosed("grant service is shutting down")
            self._pending.append(_Pending(items, loop, future))
            self._cond.notify()
        # Once queued, the reservation is committed whatever happens to the caller; a cancelled
        # request (client gone) only stops waiting, the future stays for the writer to settle.
        # As with a worker thread, such a reward is reserved but never returned.
        return await asyncio.shield(future)

    async def grant(
        self,
        member_id: str,
        offers: list[dict[str, Any]],
        *,
        bundle: Any,
        counters: Iterable[str] | frozenset[str],
    ) -> list[dict[str, Any]]:
        """The offers granted to ``member_id`` (a subset of ``offers``, same order), durable.

        Raises :class:`GrantCommitError` when the group's commit failed,
        :class:`~serving.store.UnknownBudgetError` when an offer has no budget counter in the
        store, :class:`GrantServiceClosed` after :meth:`close`.
        """
        if not offers:
            return []
        items = plan_grant(member_id, offers, bundle=bundle, counters=counters)
        if all(i.cap is None and not (i.amount and i.amount > 0) for i in items):
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
            try:
                self._commit(group)
            except Exception:  # never leave a request waiting forever
                log.exception("grant writer failed on a group of %d", len(group))
                failure = [(p, GrantCommitError("grant writer failed")) for p in group]
                for p, exc in failure:
                    with contextlib.suppress(RuntimeError):
                        p.loop.call_soon_threadsafe(_settle, [(p.future, exc)])

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


def _settle(pairs: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in pairs:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
