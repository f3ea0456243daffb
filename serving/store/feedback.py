"""Feedback events: idempotent by event id; a known id sent with other contents is a conflict.

A replay (same id, same contents) is a duplicate and changes nothing. The same id with another
member, offer, kind, decision, channel or time is not a retry but a client bug or a collision of
ids: :class:`EventConflictError` names each such event and nothing of that call is stored,
so the first write is kept and the client learns about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["COMPARED", "EventConflict", "EventConflictError", "differing"]

# The contents that make two events with one id the same event. ``ts`` is compared only when
# both sides carry a client time (a replay without ``ts`` keeps the time stored first).
COMPARED = ("member_id", "offer_id", "decision_id", "event", "channel")


@dataclass(frozen=True)
class EventConflict:
    """Event ``index`` of a call reuses ``event_id`` with other values of ``fields``."""

    index: int
    event_id: str
    fields: tuple[str, ...]

    def reason(self) -> str:
        return (
            f"event_id {self.event_id!r} is already stored with another "
            f"{', '.join(self.fields)}; the first event is kept"
        )


class EventConflictError(ValueError):
    """Some events reuse a stored (or earlier) event id with other contents; nothing stored."""

    def __init__(self, conflicts: list[EventConflict]) -> None:
        super().__init__("; ".join(c.reason() for c in conflicts))
        self.conflicts = conflicts


def differing(
    first: Mapping[Any, Any], again: Mapping[Any, Any], compare_ts: bool
) -> tuple[str, ...]:
    """The fields in which ``again`` differs from ``first`` (empty for a true replay)."""
    fields = [c for c in COMPARED if first.get(c) != again.get(c)]
    if compare_ts and first.get("ts") != again.get("ts"):
        fields.append("ts")
    return tuple(fields)
