"""The serving store: decisions log, feedback events, budget and per-member cap counters.

Every method is blocking (call it from a worker thread in async code) and commits before it
returns, so a caller acknowledges only what is durably stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from serving.store.connect import make_engine
from serving.store.migrate import migrate
from serving.store.reserve import GrantOutcome, ReservationItem, reserve_grants
from serving.store.tables import budgets, decisions, feedback_events, member_caps

__all__ = ["EventResult", "OffersStore", "UnknownBudgetError", "open_store", "utcnow"]

log = logging.getLogger(__name__)

# Budgets are money or points held as floats: tolerate rounding of sums like 0.1 + 0.2.
_EPS = 1e-9

EVENT_COLUMNS = ("event_id", "member_id", "offer_id", "decision_id", "event", "channel", "ts")
DECISION_COLUMNS = (
    "decision_id",
    "member_id",
    "channel",
    "offers",
    "model_versions",
    "fallback",
    "created_at",
)


class UnknownBudgetError(KeyError):
    """No budget counter exists for the offer."""

    def __str__(self) -> str:
        return f"no budget counter for offer_id {self.args[0]!r}"


def utcnow() -> datetime:
    """Timezone-naive UTC now, the convention of every timestamp in the store."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class EventResult:
    """Which event ids were stored by this call and which were already there."""

    stored: list[str]
    duplicates: list[str]


class OffersStore:
    """SQL store shared by serving replicas (SQLite file or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    # -- plumbing -------------------------------------------------------------------------
    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    def close(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    # -- feedback events ------------------------------------------------------------------
    def record_events(self, events: Sequence[Mapping[str, Any]]) -> EventResult:
        """Insert feedback events idempotently by ``event_id`` (first write wins).

        Returns after the commit; ids already stored (or repeated in ``events``) come back as
        duplicates and are not written again.
        """
        seen: set[str] = set()
        rows: list[dict[str, Any]] = []
        repeated: list[str] = []
        received = utcnow()
        for event in events:
            event_id = event["event_id"]
            if event_id in seen:
                repeated.append(event_id)
                continue
            seen.add(event_id)
            row = {c: event.get(c) for c in EVENT_COLUMNS}
            row["ts"] = row["ts"] or received
            row["received_at"] = received
            rows.append(row)
        if not rows:
            return EventResult(stored=[], duplicates=repeated)
        statement = (
            self._insert(feedback_events)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(feedback_events.c.event_id)
        )
        with self.engine.begin() as connection:
            stored = set(connection.execute(statement, rows).scalars().all())
        ordered = [r["event_id"] for r in rows if r["event_id"] in stored]
        duplicates = [r["event_id"] for r in rows if r["event_id"] not in stored] + repeated
        return EventResult(stored=ordered, duplicates=duplicates)

    def event_ids(self) -> set[str]:
        """Every stored feedback event id (tests and audits; not for the hot path)."""
        with self.engine.connect() as connection:
            return set(connection.execute(select(feedback_events.c.event_id)).scalars())

    def count_events(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(feedback_events)).one()[0]
            )

    # -- decisions log --------------------------------------------------------------------
    def log_decisions(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Bulk-insert decision records (one statement); a repeated ``decision_id`` is skipped.

        Returns the number of records newly written.
        """
        rows = []
        now = utcnow()
        for record in records:
            row = {c: record.get(c) for c in DECISION_COLUMNS}
            row["created_at"] = row["created_at"] or now
            row["offers"] = list(row["offers"] or [])
            row["model_versions"] = dict(row["model_versions"] or {})
            rows.append(row)
        if not rows:
            return 0
        statement = (
            self._insert(decisions)
            .on_conflict_do_nothing(index_elements=["decision_id"])
            .returning(decisions.c.decision_id)
        )
        with self.engine.begin() as connection:
            return len(connection.execute(statement, rows).scalars().all())

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(decisions).where(decisions.c.decision_id == decision_id)
            ).first()
        return None if row is None else dict(row._mapping)

    # -- budgets --------------------------------------------------------------------------
    def set_budget(self, offer_id: str, budget: float, unit: str = "cost") -> None:
        """Create or change an offer's budget; what was already spent is kept."""
        if budget < 0:
            raise ValueError(f"budget for offer_id {offer_id!r} must be >= 0, got {budget}")
        now = utcnow()
        statement = self._insert(budgets).values(
            offer_id=offer_id, budget=float(budget), unit=unit, spent=0.0, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["offer_id"],
            set_={"budget": float(budget), "unit": unit, "updated_at": now},
        )
        with self.engine.begin() as connection:
            connection.execute(statement)

    def reserve_budget(self, offer_id: str, amount: float) -> bool:
        """Atomically add ``amount`` to the offer's spend if it stays within budget.

        One conditional UPDATE (``spent + amount <= budget``): concurrent callers on any
        replica can never overspend. Returns False when the budget cannot cover ``amount``;
        raises :class:`UnknownBudgetError` when the offer has no budget counter.
        """
        if not amount > 0:
            raise ValueError(f"amount for offer_id {offer_id!r} must be > 0, got {amount}")
        statement = (
            update(budgets)
            .where(budgets.c.offer_id == offer_id)
            .where(budgets.c.spent + amount <= budgets.c.budget + _EPS)
            .values(spent=budgets.c.spent + amount, updated_at=utcnow())
        )
        with self.engine.begin() as connection:
            if connection.execute(statement).rowcount == 1:
                return True
        if self.budget(offer_id) is None:
            raise UnknownBudgetError(offer_id)
        return False

    def release_budget(self, offer_id: str, amount: float) -> None:
        """Give back a reservation that was not used (never below zero)."""
        statement = (
            update(budgets)
            .where(budgets.c.offer_id == offer_id)
            .values(
                spent=func.max(budgets.c.spent - amount, 0.0)
                if self.dialect == "sqlite"
                else func.greatest(budgets.c.spent - amount, 0.0),
                updated_at=utcnow(),
            )
        )
        with self.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                raise UnknownBudgetError(offer_id)

    def budget(self, offer_id: str) -> dict[str, Any] | None:
        """``{"offer_id", "budget", "unit", "spent"}`` or None."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(budgets.c.offer_id, budgets.c.budget, budgets.c.unit, budgets.c.spent).where(
                    budgets.c.offer_id == offer_id
                )
            ).first()
        return None if row is None else dict(row._mapping)

    def budgets(self) -> dict[str, dict[str, Any]]:
        """Every budget counter by offer id."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(budgets.c.offer_id, budgets.c.budget, budgets.c.unit, budgets.c.spent)
            ).all()
        return {r.offer_id: dict(r._mapping) for r in rows}

    # -- per-member caps ------------------------------------------------------------------
    def reserve_member_cap(self, member_id: str, cap_key: str, period: str, cap: int) -> bool:
        """Atomically count one grant against a member's cap for ``cap_key`` in ``period``.

        Returns False (and counts nothing) when the member already used ``cap`` grants.
        """
        if cap < 0:
            raise ValueError(f"cap for {cap_key!r} must be >= 0, got {cap}")
        now = utcnow()
        create = (
            self._insert(member_caps)
            .values(member_id=member_id, cap_key=cap_key, period=period, used=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=["member_id", "cap_key", "period"])
        )
        bump = (
            update(member_caps)
            .where(member_caps.c.member_id == member_id)
            .where(member_caps.c.cap_key == cap_key)
            .where(member_caps.c.period == period)
            .where(member_caps.c.used < cap)
            .values(used=member_caps.c.used + 1, updated_at=now)
        )
        with self.engine.begin() as connection:
            connection.execute(create)
            return connection.execute(bump).rowcount == 1

    def reserve_grants(self, requests: Sequence[Sequence[ReservationItem]]) -> list[GrantOutcome]:
        """Many grant requests' cap and budget reservations in ONE transaction (one commit).

        Each count is its own conditional UPDATE, as in :meth:`reserve_member_cap` and
        :meth:`reserve_budget`; see :mod:`serving.store.reserve`. Raises, committing nothing,
        when the database fails.
        """
        return reserve_grants(self, requests)

    def cap_usage(self, member_id: str, period: str) -> dict[str, int]:
        """Grants counted per cap key for one member in one period."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(member_caps.c.cap_key, member_caps.c.used)
                .where(member_caps.c.member_id == member_id)
                .where(member_caps.c.period == period)
            ).all()
        return {r.cap_key: int(r.used) for r in rows}


def open_store(url: str, *, migrate_schema: bool = True, **engine_kwargs: Any) -> OffersStore:
    """Engine + (optionally) migrations to head + store, in one call."""
    engine = make_engine(url, **engine_kwargs)
    if migrate_schema:
        migrate(engine)
        log.info("store migrated to head (%s)", engine.dialect.name)
    return OffersStore(engine)
