"""Errors of the store's counters, shared by the store and the grant reservation."""

from __future__ import annotations

__all__ = ["UnknownBudgetError"]


class UnknownBudgetError(KeyError):
    """No budget counter exists for the offer."""

    def __str__(self) -> str:
        return f"no budget counter for offer_id {self.args[0]!r}"
