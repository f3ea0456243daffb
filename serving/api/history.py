"""Per-process cache of members' grant history (the store's ``grants`` not released).

``MemberHistory.get(member_id)`` answers from the cache when the member's entry is younger
than ``ttl_seconds``, and reads the store (``OffersStore.member_grants``) otherwise; at most
``max_members`` entries are kept (least recently used evicted). This process's own grants,
cancels and redemptions update the entry at once, so a decision here never misses what this
process granted; what other replicas granted shows within ``ttl_seconds``. The caps that must
never be passed are enforced at grant time by the store, whatever the cache says.

With ``read_live`` (``OffersStore.live_grants``), the refresh at the TTL reads every grant not
released in one query, up to ``live_max_grants`` of them, and fills the entries of all the
members at once (a member without one gets an empty entry): a member's first request and its
requests after the TTL then cost no store read of their own (a per-member read costs ~0.4 ms
of CPU with its thread hop; the one query ~2-3 us per grant). An entry this process changes
while the query runs (its own grant, a cancel) is left as this process made it. Above
``live_max_grants`` the refresh reads only the ids of the members with grants (``read_roster``)
and members are read one by one, as without ``read_live``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from anyio import to_thread

from serving.engine.state import PastGrant

__all__ = ["MemberHistory"]


class MemberHistory:
    """LRU cache of ``PastGrant`` tuples per member, refreshed after ``ttl_seconds``."""

    def __init__(
        self,
        read: Callable[[str], list[PastGrant]],
        *,
        max_members: int = 100_000,
        ttl_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        read_roster: Callable[[], Iterable[str]] | None = None,
        read_live: Callable[[int], list[tuple[str, PastGrant]] | None] | None = None,
        live_max_grants: int = 200_000,
    ) -> None:
        """``read_roster``: the ids of every member with a grant not released (one query); when
        given, a member missing from the roster (refreshed after ``ttl_seconds``, and kept up to
        date with this process's own grants) has no grants and costs no per-member read."""
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, got {max_members}")
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds}")
        self._read = read
        self.max_members = max_members
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[PastGrant, ...]]] = OrderedDict()
        self._lock = threading.Lock()  # the sweep thread updates entries too
        self._read_roster = read_roster
        self._read_live = read_live
        self.live_max_grants = live_max_grants
        self._roster: set[str] = set()
        self._roster_at = -float("inf")
        self._refreshing: asyncio.Future[None] | None = None
        self._watchers: list[set[str]] = []  # members changed during each refresh in progress
        self.hits = 0
        self.misses = 0
        self.roster_skips = 0
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, member_id: str) -> tuple[PastGrant, ...] | None:
        """The fresh cached history, or None (missing or older than the TTL)."""
        with self._lock:
            entry = self._entries.get(member_id)
            if entry is None or self._clock() - entry[0] > self.ttl_seconds:
                return None
            self._entries.move_to_end(member_id)
            return entry[1]

    async def get(self, member_id: str) -> tuple[PastGrant, ...]:
        """The member's grants not released (cache hit, or one store read in a thread)."""
        found = self.cached(member_id)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        started = self._clock()
        if self._read_roster is not None or self._read_live is not None:
            if started - self._roster_at > self.ttl_seconds:
                await self._refresh_once(started)
                found = self.cached(member_id)  # filled by the refresh (read_live)
                if found is not None:
                    return found
            if member_id not in self._roster:
                self.roster_skips += 1
                self._put(member_id, (), started)
                return ()
        grants = tuple(await to_thread.run_sync(self._read, member_id))
        self._put(member_id, grants, started)
        return grants

    async def _refresh_once(self, started: float) -> None:
        """One refresh at a time: concurrent requests wait for the one in progress."""
        running = self._refreshing
        if running is None:
            running = asyncio.ensure_future(to_thread.run_sync(self._refresh_roster, started))
            self._refreshing = running
            running.add_done_callback(self._refreshed)
        await asyncio.shield(running)

    def _refreshed(self, done: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not done.cancelled():
            done.exception()  # retrieved: the waiters got it

    def _refresh_roster(self, started: float) -> None:
        changed: set[str] = set()
        with self._lock:
            self._watchers.append(changed)
        try:
            live = self._read_live(self.live_max_grants) if self._read_live is not None else None
            grouped: dict[str, list[PastGrant]] | None = None
            if live is not None:
                grouped = {}
                for member_id, grant in live:
                    grouped.setdefault(member_id, []).append(grant)
                roster = set(grouped)
            else:
                assert self._read_roster is not None, "read_live above its limit, no read_roster"
                roster = set(self._read_roster())
            with self._lock:
                # keep what this process added meanwhile (a member wrongly on the roster only
                # costs a read; one wrongly off it would be decided without its grants)
                self._roster = roster | self._roster
                self._roster_at = started
                if grouped is not None:
                    self._fill(grouped, started, changed)
                self.refreshes += 1
        finally:
            with self._lock:
                self._watchers.remove(changed)

    def _fill(self, grouped: dict[str, list[PastGrant]], at: float, changed: set[str]) -> None:
        """Entries from one read of every live grant (lock held): members this process changed
        during the read keep their entry (or its absence); cached members without a live grant
        get an empty one; new entries go in least recently used first."""
        entries = self._entries
        for member_id in list(entries):
            if member_id not in grouped and member_id not in changed:
                entries[member_id] = (at, ())
        for member_id, grants in grouped.items():
            if member_id in changed:
                continue
            known = member_id in entries
            entries[member_id] = (at, tuple(grants))
            if not known:
                entries.move_to_end(member_id, last=False)
        while len(entries) > self.max_members:
            entries.popitem(last=False)

    def load(self, member_id: str) -> tuple[PastGrant, ...]:
        """Blocking :meth:`get` (for code already in a worker thread)."""
        found = self.cached(member_id)
        if found is not None:
            return found
        started = self._clock()
        if self._read_roster is not None or self._read_live is not None:
            if started - self._roster_at > self.ttl_seconds:
                self._refresh_roster(started)
                found = self.cached(member_id)
                if found is not None:
                    return found
            if member_id not in self._roster:
                self._put(member_id, (), started)
                return ()
        grants = tuple(self._read(member_id))
        self._put(member_id, grants, started)
        return grants

    def _put(self, member_id: str, grants: tuple[PastGrant, ...], at: float) -> None:
        with self._lock:
            self._entries[member_id] = (at, grants)
            self._entries.move_to_end(member_id)
            while len(self._entries) > self.max_members:
                self._entries.popitem(last=False)

    def add(self, member_id: str, grants: Iterable[PastGrant]) -> None:
        """This process granted these: append them to a cached entry (a missing entry is read
        from the store, where they already are, on next use)."""
        new = tuple(grants)
        if not new:
            return
        with self._lock:
            self._roster.add(member_id)
            for changed in self._watchers:
                changed.add(member_id)
            entry = self._entries.get(member_id)
            if entry is not None:
                self._entries[member_id] = (entry[0], entry[1] + new)

    def invalidate(self, member_ids: Iterable[str]) -> None:
        """Forget members whose grants changed (cancel, return, redemption, sweep)."""
        with self._lock:
            for member_id in member_ids:
                self._entries.pop(member_id, None)
                for changed in self._watchers:
                    changed.add(member_id)

    def stats(self) -> dict[str, Any]:
        return {
            "members": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "roster_skips": self.roster_skips,
            "refreshes": self.refreshes,
        }
