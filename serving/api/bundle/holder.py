"""The bundle being served, swapped whole at reload, and the offers whose store budget ran out.

``BundleHolder.current`` is replaced in one assignment (a request that already took the old
bundle finishes on it); ``exhausted`` grows as grants find budgets spent and is reset to what the
store says at each swap.
"""

from __future__ import annotations

import threading

from serving.api.bundle.serving_bundle import ServingBundle
from serving.settings import Settings

__all__ = ["BundleHolder"]


class BundleHolder:
    """The current bundle and the offers whose store budget ran out (learned at grant time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: ServingBundle | None = None
        self._lock = threading.Lock()
        self._exhausted: frozenset[str] = frozenset()

    def swap(self, bundle: ServingBundle, exhausted: frozenset[str]) -> None:
        """Serve ``bundle`` with the offers not to offer as the store says now (a reload's
        budgets may have grown: the old exhausted set does not carry over)."""
        with self._lock:
            self.current = bundle
            self._exhausted = frozenset(exhausted)

    @property
    def exhausted(self) -> frozenset[str]:
        return self._exhausted

    def mark_exhausted(self, offer_ids: set[str] | frozenset[str]) -> None:
        with self._lock:
            self._exhausted = self._exhausted | frozenset(offer_ids)
