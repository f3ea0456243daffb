"""Many grant reservations in one transaction (the group commit of ``serving.api.grants``).

A grant request is a sequence of :class:`ReservationItem` (one per offer to grant, in order):
the member's cap for the item (a surprise's yearly cap) is counted first, then the offer's
budget. Each count is its own conditional UPDATE, exactly as ``reserve_member_cap`` and
``reserve_budget`` do, so no counter can pass its limit whatever else shares the transaction;
only the commit (one fsync for the whole group) is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, tuple_
from sqlalchemy.exc import OperationalError

from serving.store.tables import budgets, member_caps

__all__ = ["CapKey", "GrantOutcome", "ReservationItem", "reserve_grants"]

log = logging.getLogger(__name__)

_EPS = 1e-9  # as in store.reserve_budget: tolerate float rounding of sums like 0.1 + 0.2
# PostgreSQL: deadlock detected / serialization failure. The transaction is rolled back, so
# running the whole group again is safe.
_RETRY_SQLSTATES = {"40P01", "40001"}
RETRIES = 3


@dataclass(frozen=True, slots=True)
class CapKey:
    """One per-member cap counter: ``cap`` grants of ``cap_key`` per ``period``."""

    member_id: str
    cap_key: str
    period: str
    cap: int


@dataclass(frozen=True, slots=True)
class ReservationItem:
    """What granting one offer needs: a member cap count and/or a budget amount (or neither)."""

    offer_id: str
    cap: CapKey | None = None
    amount: float | None = None  # None or <= 0: the offer's budget is not touched

    def __post_init__(self) -> None:
        if self.cap is not None and self.cap.cap < 0:
            raise ValueError(f"cap for {self.cap.cap_key!r} must be >= 0, got {self.cap.cap}")


@dataclass(slots=True)
class GrantOutcome:
    """Result of one request: indices of the granted items, offers found spent, or an error.

    ``error`` is set (UnknownBudgetError) when an item names an offer without a budget counter;
    the items before it keep their reservations, as with one ``reserve_budget`` call per item.
    """

    granted: list[int] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)
    error: Exception | None = None


# Plain SQL on the DBAPI cursor: each reservation is one short statement, and SQLAlchemy's
# per-execute overhead (~60 us) would dominate a group's time. Same predicates as
# OffersStore.reserve_member_cap / reserve_budget.
_CAP_BUMP = (
    "UPDATE member_caps SET used = used + 1, updated_at = {p} "
    "WHERE member_id = {p} AND cap_key = {p} AND period = {p} AND used < {p}"
)
_BUDGET_BUMP = (
    "UPDATE budgets SET spent = spent + {p}, updated_at = {p} "
    f"WHERE offer_id = {{p}} AND spent + {{p}} <= budget + {_EPS!r}"
)
_BUDGET_EXISTS = "SELECT 1 FROM budgets WHERE offer_id = {p}"
_PARAM = {"sqlite": "?", "postgresql": "%s"}


def _sql(dialect: str) -> tuple[str, str, str]:
    p = _PARAM[dialect]
    return _CAP_BUMP.format(p=p), _BUDGET_BUMP.format(p=p), _BUDGET_EXISTS.format(p=p)


def _run_group(
    connection: Connection, insert: Any, requests: Sequence[Sequence[ReservationItem]], now: Any
) -> list[GrantOutcome]:
    from serving.store.store import UnknownBudgetError

    if connection.dialect.name == "postgresql":
        # Lock the group's budget rows in one sorted order first: two replicas' writers then
        # queue on the hot rows instead of deadlocking on them.
        offer_ids = sorted({i.offer_id for r in requests for i in r if i.amount and i.amount > 0})
        if offer_ids:
            connection.execute(
                select(budgets.c.offer_id)
                .where(budgets.c.offer_id.in_(offer_ids))
                .order_by(budgets.c.offer_id)
                .with_for_update()
            )
    cap_rows = {
        (i.cap.member_id, i.cap.cap_key, i.cap.period)
        for r in requests
        for i in r
        if i.cap is not None
    }
    if cap_rows:
        create = insert(member_caps).on_conflict_do_nothing(
            index_elements=["member_id", "cap_key", "period"]
        )
        connection.execute(
            create,
            [
                {"member_id": m, "cap_key": k, "period": p, "used": 0, "updated_at": now}
                for m, k, p in sorted(cap_rows)
            ],
        )
    if cap_rows and connection.dialect.name == "postgresql":
        # The same for the members' cap rows (ON CONFLICT DO NOTHING locks none of them).
        key = tuple_(member_caps.c.member_id, member_caps.c.cap_key, member_caps.c.period)
        connection.execute(
            select(member_caps.c.member_id)
            .where(key.in_(sorted(cap_rows)))
            .order_by(member_caps.c.member_id, member_caps.c.cap_key, member_caps.c.period)
            .with_for_update()
        )
    cap_sql, budget_sql, exists_sql = _sql(connection.dialect.name)
    # SQLite stores DateTime as text in SQLAlchemy's format; PostgreSQL takes the datetime.
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f") if connection.dialect.name == "sqlite" else now
    cursor = connection.connection.cursor()  # the DBAPI cursor, inside the same transaction
    try:
        outcomes = []
        for request in requests:
            outcome = GrantOutcome()
            for index, item in enumerate(request):
                cap = item.cap
                if cap is not None:
                    cursor.execute(
                        cap_sql, (stamp, cap.member_id, cap.cap_key, cap.period, int(cap.cap))
                    )
                    if cursor.rowcount != 1:
                        continue
                if item.amount is not None and item.amount > 0:
                    amount = float(item.amount)
                    cursor.execute(budget_sql, (amount, stamp, item.offer_id, amount))
                    if cursor.rowcount != 1:
                        cursor.execute(exists_sql, (item.offer_id,))
                        if cursor.fetchone() is None:
                            outcome.error = UnknownBudgetError(item.offer_id)
                            break
                        outcome.exhausted.append(item.offer_id)
                        continue
                outcome.granted.append(index)
            outcomes.append(outcome)
    finally:
        cursor.close()
    return outcomes


def reserve_grants(store: Any, requests: Sequence[Sequence[ReservationItem]]) -> list[GrantOutcome]:
    """Run every request's reservations in one transaction and commit once; one outcome each.

    Raises (and commits nothing) when the database fails; a PostgreSQL deadlock or
    serialization failure is retried up to ``RETRIES`` times.
    """
    from serving.store.store import utcnow

    if not requests:
        return []
    for attempt in range(RETRIES + 1):
        try:
            with store.engine.begin() as connection:
                return _run_group(connection, store._insert, requests, utcnow())
        except OperationalError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in _RETRY_SQLSTATES or attempt == RETRIES:
                raise
            log.warning("grant group rolled back (%s), retrying (%d)", code, attempt + 1)
    raise AssertionError("unreachable")
