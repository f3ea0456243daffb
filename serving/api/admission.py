"""Admission control of checkout: under overload, answer 503 at once instead of waiting.

A checkout reserves its rewards through the one grant writer of its process
(:class:`~serving.api.grants.GrantService`). When that writer falls behind (the store's write
lock is held by another process, commits are slow, or more requests arrive than it commits),
a new checkout would wait in its queue and the till would get its answer late or not at all.
So before deciding, :meth:`CheckoutAdmission.check` reads the writer's backlog and refuses
the request when

* ``queue_full``: ``OFFERS_CHECKOUT_MAX_QUEUE`` or more reservations are queued and not yet
  taken by the writer, or
* ``queue_wait``: the oldest reservation not yet committed has waited longer than
  ``OFFERS_CHECKOUT_QUEUE_WAIT_MS``.

A refused request gets ``503`` with ``Retry-After: 1`` and ``{"error": "unavailable",
"detail": "checkout overloaded (<reason>: ...); nothing was reserved, retry"}``. Nothing was
decided, reserved or stored: no budget or cap reservation, no session row, no decision log
record (the decision log records decisions; a shed request had none, and writing a record
for it would add a write to the store exactly while the store is the bottleneck). Sheds are
counted in ``offers_checkout_shed_total{reason}`` and logged at most once per
:data:`LOG_EVERY_SECONDS`. A dry run reserves nothing and is not refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from serving.api.grants import Backlog, GrantService

__all__ = [
    "QUEUE_FULL",
    "QUEUE_WAIT",
    "REASONS",
    "RETRY_AFTER_SECONDS",
    "AdmissionLimits",
    "CheckoutAdmission",
    "shed_reason",
]

log = logging.getLogger(__name__)

QUEUE_FULL = "queue_full"
QUEUE_WAIT = "queue_wait"
REASONS = (QUEUE_FULL, QUEUE_WAIT)
RETRY_AFTER_SECONDS = "1"
LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The two bounds (``OFFERS_CHECKOUT_MAX_QUEUE``, ``OFFERS_CHECKOUT_QUEUE_WAIT_MS``; their
    ranges are checked by :class:`~serving.settings.ServingSettings`)."""

    max_queue: int
    queue_wait_ms: float

    @classmethod
    def from_settings(cls, serving: Any) -> AdmissionLimits:
        """The limits of a :class:`~serving.settings.ServingSettings`."""
        return cls(int(serving.checkout_max_queue), float(serving.checkout_queue_wait_ms))

    def detail(self, reason: str) -> str:
        """The 503's ``detail``: the reason and the limit (not the live figures, so the same
        overload gets the same answer from every path)."""
        if reason == QUEUE_FULL:
            why = f"{QUEUE_FULL}: {self.max_queue} reservations wait for the store"
        else:
            why = f"{QUEUE_WAIT}: a reservation has waited over {self.queue_wait_ms:g} ms"
        return f"checkout overloaded ({why}); nothing was reserved, retry"


def shed_reason(backlog: Backlog, limits: AdmissionLimits) -> str | None:
    """Why a new checkout is refused with this backlog, or None when it is admitted."""
    if backlog.queued >= limits.max_queue:
        return QUEUE_FULL
    if backlog.oldest_wait * 1000.0 > limits.queue_wait_ms:
        return QUEUE_WAIT
    return None


class CheckoutAdmission:
    """The admission rule of one process: its grant writer, limits and shed counter."""

    def __init__(self, grants: GrantService, limits: AdmissionLimits, counter: Any) -> None:
        """``counter``: the shed counter (``ApiMetrics.checkout_shed``), labelled by reason."""
        self.grants = grants
        self.limits = limits
        self._count = {reason: counter.labels(reason).inc for reason in REASONS}
        self._details = {reason: limits.detail(reason) for reason in REASONS}
        self._unlogged = 0
        self._logged_at = -LOG_EVERY_SECONDS

    def check(self) -> None:
        """Return when a checkout may go on; raise the 503 (``HTTPException``) when not."""
        reason = shed_reason(self.grants.backlog(), self.limits)
        if reason is None:
            return
        self._count[reason]()
        self._note(reason)
        raise HTTPException(
            status_code=503,
            detail=self._details[reason],
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    def _note(self, reason: str) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning("checkout shed %d request(s) (last: %s)", self._unlogged, reason)
            self._unlogged = 0
            self._logged_at = now
