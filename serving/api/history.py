"""Per-process cache of members' grant history (the store's ``grants`` not released).

``MemberHistory.get(member_id)`` answers from the cache when the member's entry is younger
than ``ttl_seconds``, and reads the store (``OffersStore.member_grants``) otherwise; at most
``max_members`` entries are kept (least recently used evicted). This process's own grants,
cancels and redemptions update the entry at once, so a decision here never misses what this
process granted; what other replicas granted shows within ``ttl_seconds``. The caps that must
never be passed are enforced at grant time by the store, whatever the cache says.
"""

from __future__ import annotations

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
        self._roster: set[str] = set()
        self._roster_at = -float("inf")
        self.hits = 0
        self.misses = 0
        self.roster_skips = 0

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
        if self._read_roster is not None:
            if started - self._roster_at > self.ttl_seconds:
                await to_thread.run_sync(self._refresh_roster, started)
            if member_id not in self._roster:
                self.roster_skips += 1
                self._put(member_id, (), started)
                return ()
        grants = tuple(await to_thread.run_sync(self._read, member_id))
        self._put(member_id, grants, started)
        return grants

    def _refresh_roster(self, started: float) -> None:
        assert self._read_roster is not None
        roster = set(self._read_roster())
        with self._lock:
            # keep what this process added meanwhile (a member wrongly on the roster only costs
            # a read; one wrongly off it would be decided without its grants)
            self._roster = roster | self._roster
            self._roster_at = started

    def load(self, member_id: str) -> tuple[PastGrant, ...]:
        """Blocking :meth:`get` (for code already in a worker thread)."""
        found = self.cached(member_id)
        if found is not None:
            return found
        started = self._clock()
        if self._read_roster is not None:
            if started - self._roster_at > self.ttl_seconds:
                self._refresh_roster(started)
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
            entry = self._entries.get(member_id)
            if entry is not None:
                self._entries[member_id] = (entry[0], entry[1] + new)

    def invalidate(self, member_ids: Iterable[str]) -> None:
        """Forget members whose grants changed (cancel, return, redemption, sweep)."""
        with self._lock:
            for member_id in member_ids:
                self._entries.pop(member_id, None)

    def stats(self) -> dict[str, Any]:
        return {
            "members": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "roster_skips": self.roster_skips,
        }
