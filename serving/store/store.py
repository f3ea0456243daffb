"""The serving store: decisions log, feedback events, budget and per-member cap counters.

Every method is blocking (call it from a worker thread in async code) and commits before it
returns, so a caller acknowledges only what is durably stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from serving.store import sessions
from serving.store.clock import utcnow
from serving.store.connect import make_engine
from serving.store.errors import UnknownBudgetError
from serving.store.feedback import EventConflict, EventConflictError, differing
from serving.store.migrate import migrate
from serving.store.reserve import GrantOutcome, GrantRequest, ReservationItem, reserve_grants
from serving.store.tables import budgets, decisions, feedback_events, member_caps

__all__ = [
    "EventConflictError",
    "EventResult",
    "OffersStore",
    "UnknownBudgetError",
    "open_store",
    "utcnow",
]

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
    "held_out",
    "holdout_share",
    "campaign_id",
)


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

        Returns after the commit; ids already stored (or repeated in ``events``) with the same
        contents come back as duplicates and are not written again. An id already stored, or
        repeated, with other contents raises :class:`EventConflictError` (naming each one) and
        nothing of the call is stored. Database errors propagate with nothing stored.
        """
        first: dict[str, tuple[int, dict[str, Any]]] = {}
        given_ts: set[str] = set()
        rows: list[dict[str, Any]] = []
        repeated: list[str] = []
        conflicts: list[EventConflict] = []
        received = utcnow()
        for index, event in enumerate(events):
            event_id = event["event_id"]
            row = {c: event.get(c) for c in EVENT_COLUMNS}
            if event_id in first:
                earlier = first[event_id][1]
                both_ts = event_id in given_ts and row["ts"] is not None
                fields = differing(earlier, row, both_ts)
                if fields:
                    conflicts.append(EventConflict(index, event_id, fields))
                repeated.append(event_id)
                continue
            if row["ts"] is not None:
                given_ts.add(event_id)
            row["ts"] = row["ts"] or received
            row["received_at"] = received
            first[event_id] = (index, row)
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
            known = [r["event_id"] for r in rows if r["event_id"] not in stored]
            if known:
                existing = connection.execute(
                    select(feedback_events).where(feedback_events.c.event_id.in_(known))
                ).mappings()
                for old in existing:
                    index, row = first[old["event_id"]]
                    fields = differing(old, row, old["event_id"] in given_ts)
                    if fields:
                        conflicts.append(EventConflict(index, old["event_id"], fields))
            if conflicts:  # raising inside the transaction rolls the whole call back
                raise EventConflictError(sorted(conflicts, key=lambda c: c.index))
        ordered = [r["event_id"] for r in rows if r["event_id"] in stored]
        duplicates = [r["event_id"] for r in rows if r["event_id"] not in stored] + repeated
        return EventResult(stored=ordered, duplicates=duplicates)

    def check_writable(self) -> None:
        """Raise when the store cannot take a write now (down, write lock held past the lock
        wait, read-only file): a probe row is inserted and rolled back."""
        probe = self._insert(feedback_events).on_conflict_do_nothing(index_elements=["event_id"])
        now = utcnow()
        with self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                connection.execute(
                    probe,
                    {"event_id": "~readyz-probe", "member_id": "~", "event": "probe",
                     "ts": now, "received_at": now},
                )  # fmt: skip
            finally:
                transaction.rollback()

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

    def reserve_grants(
        self, requests: Sequence[GrantRequest | Sequence[ReservationItem]]
    ) -> list[GrantOutcome]:
        """Many grant requests' sessions, cap and budget reservations and grant rows in ONE
        transaction (one commit).

        Each count is its own conditional UPDATE, as in :meth:`reserve_member_cap` and
        :meth:`reserve_budget`; see :mod:`serving.store.reserve`. Raises, committing nothing,
        when the database fails.
        """
        return reserve_grants(self, requests)

    # -- checkout sessions and grants (serving.store.sessions) ----------------------------
    def get_session(self, transaction_id: str) -> dict[str, Any] | None:
        """The checkout session row (state, member, decision id, stored answer) or None."""
        return sessions.get_session(self.engine, transaction_id)

    def close_session(self, transaction_id: str) -> sessions.SessionChange:
        """open -> closed; see :func:`serving.store.sessions.close_session`."""
        return sessions.close_session(self.engine, transaction_id, utcnow())

    def cancel_session(
        self, transaction_id: str, offer_ids: Sequence[str] | None = None
    ) -> sessions.SessionChange:
        """Void a transaction or some of its rewards, releasing what they reserved."""
        return sessions.cancel_session(self.engine, transaction_id, utcnow(), offer_ids)

    def sweep_sessions(
        self, open_seconds: float, now: datetime | None = None, **batching: Any
    ) -> Any:
        """Release expired grants and abandoned open sessions (:func:`sessions.sweep`;
        ``batching``: its ``limit``, ``batch`` and ``pause``)."""
        return sessions.sweep(self.engine, now or utcnow(), open_seconds, **batching)

    def members_with_grants(self) -> list[str]:
        """Ids of the members with at least one grant not released (the history's roster)."""
        return sessions.members_with_grants(self.engine)

    def live_grants(self, limit: int) -> list[tuple[str, Any]] | None:
        """Every grant not released as (member_id, ``PastGrant``), or None above ``limit``."""
        return sessions.live_grants(self.engine, limit)

    def member_grants(self, member_id: str) -> list[Any]:
        """The member's grants not released, as ``serving.engine.state.PastGrant``."""
        return sessions.member_grants(self.engine, member_id)

    def mark_redeemed(
        self, redemptions: Sequence[tuple[str, str, str | None]]
    ) -> list[tuple[str, str]]:
        """Mark grants redeemed from (member_id, offer_id, decision_id) feedback."""
        return sessions.mark_redeemed(self.engine, redemptions, utcnow())

    def grant_counts(self) -> dict[str, dict[str, int]]:
        """Grant rows per offer and state."""
        return sessions.grant_counts(self.engine)

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
