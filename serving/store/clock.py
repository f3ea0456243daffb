"""The store's clock: every timestamp it writes is timezone-naive UTC."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Timezone-naive UTC now, the convention of every timestamp in the store."""
    return datetime.now(UTC).replace(tzinfo=None)
