"""Batched decision-log writes: requests enqueue, one background thread bulk-inserts."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from serving.store.store import OffersStore

__all__ = ["DecisionLogWriter"]

log = logging.getLogger(__name__)


class DecisionLogWriter:
    """Queue of decision records flushed every ``flush_seconds`` or ``max_batch`` records.

    ``submit`` never blocks on the database. When the queue holds ``max_pending`` records (the
    store is down for long) the oldest are dropped and counted in ``dropped``: decisions are an
    audit log, serving must not stop for it. ``close`` flushes what is left.
    """

    def __init__(
        self,
        store: OffersStore,
        *,
        flush_seconds: float = 0.2,
        max_batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self._pending: deque[Mapping[str, Any]] = deque(maxlen=max_pending)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one decision record."""
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append(record)
            full = len(self._pending) >= self.max_batch
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write everything queued now (from the caller's thread); returns records written."""
        total = 0
        while True:
            with self._lock:
                batch = [
                    self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))
                ]
            if not batch:
                return total
            try:
                self.store.log_decisions(batch)
            except Exception as exc:
                log.error(
                    "decision log flush failed (%s); %d records kept for retry",
                    type(exc).__name__,
                    len(batch),
                )
                with self._lock:
                    self._pending.extendleft(reversed(batch))
                return total
            total += len(batch)
            self.written += len(batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the thread and flush what is left."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()
