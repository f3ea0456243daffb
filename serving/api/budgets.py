"""Store budget counters that follow the catalog (at start-up and at every reload).

For every catalog offer with a budget, the store's counter is created, or its size and unit are
set to the catalog's; what was already spent is kept. Each change is logged (offer id,
``old -> new``). An offer whose counter cannot be created or updated is not offered (it is
returned as exhausted, and logged): granting it without a reservation could overspend. An
offer whose catalog budget was removed keeps its store row (the history) but no longer reserves.

    sync = sync_budgets(store, bundle.engine.offers)
    state.budget_counters = sync.counters      # offers that reserve at checkout
    bundle_holder.mark_exhausted(sync.exhausted)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from serving.engine import OfferTable

__all__ = ["BudgetChange", "BudgetSync", "BudgetSyncError", "seed_budgets", "sync_budgets"]

log = logging.getLogger(__name__)

_TOL = 1e-9


class BudgetSyncError(RuntimeError):
    """The store's counters could not be read at all (names the store error)."""


@dataclass(frozen=True)
class BudgetChange:
    """One counter change: ``old`` is None for a new counter, ``new`` None for a removed one."""

    offer_id: str
    old: tuple[float, str] | None
    new: tuple[float, str] | None
    spent: float = 0.0

    def __str__(self) -> str:
        def fmt(v: tuple[float, str] | None) -> str:
            return "none" if v is None else f"{v[1]} {v[0]:g}"

        return f"{self.offer_id}: {fmt(self.old)} -> {fmt(self.new)} (spent {self.spent:g})"


@dataclass(frozen=True)
class BudgetSync:
    """What the sync left: offers with a counter (they reserve at checkout), offers not to
    offer (counter spent, or not creatable), the changes made and the failures."""

    counters: frozenset[str]
    exhausted: frozenset[str]
    changes: tuple[BudgetChange, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


def _unit(unit: str | None) -> str:
    return unit or "count"


def sync_budgets(store: Any, offers: OfferTable) -> BudgetSync:
    """Make the store's budget counters follow the catalog's ``offers`` (see module doc)."""
    try:
        have = store.budgets()
    except Exception as exc:
        raise BudgetSyncError(
            f"budget counters unreadable: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    changes: list[BudgetChange] = []
    failed: dict[str, str] = {}
    wanted: set[str] = set()
    for j, offer_id in enumerate(offers.ids):
        size = float(offers.budget[j])
        if not math.isfinite(size):
            row = have.get(offer_id)
            if row is not None:
                log.info(
                    "budget %s: removed from the catalog; store counter (%s %g, spent %g) "
                    "kept but no longer reserved",
                    offer_id,
                    row["unit"],
                    row["budget"],
                    row["spent"],
                )
            continue
        wanted.add(offer_id)
        unit = _unit(offers.budget_unit[j])
        row = have.get(offer_id)
        old = None if row is None else (float(row["budget"]), str(row["unit"]))
        if old is not None and abs(old[0] - size) <= _TOL and old[1] == unit:
            continue
        try:
            store.set_budget(offer_id, size, unit=unit)
        except Exception as exc:
            failed[offer_id] = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.error(
                "budget %s: counter %s -> %s %g not %s (%s); the offer is not offered",
                offer_id,
                "none" if old is None else f"{old[1]} {old[0]:g}",
                unit,
                size,
                "created" if old is None else "updated",
                failed[offer_id],
            )
            continue
        change = BudgetChange(offer_id, old, (size, unit), 0.0 if row is None else row["spent"])
        changes.append(change)
        log.warning("budget %s", change)
    try:
        have = store.budgets()
    except Exception as exc:
        raise BudgetSyncError(
            f"budget counters unreadable: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    counters = frozenset(k for k in wanted if k in have and k not in failed)
    spent = {k for k in counters if have[k]["spent"] >= have[k]["budget"] - _TOL}
    # an offer whose counter failed but exists (the update failed) or never existed: not offered
    exhausted = frozenset(spent | set(failed))
    return BudgetSync(counters, exhausted, tuple(changes), failed)


def seed_budgets(store: Any, offers: OfferTable) -> tuple[frozenset[str], set[str]]:
    """:func:`sync_budgets` as (offers with a counter, offers not to offer)."""
    sync = sync_budgets(store, offers)
    return sync.counters, set(sync.exhausted)
