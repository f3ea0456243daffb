"""Many grant reservations in one transaction (the group commit of ``serving.api.grants``).

A grant request is a sequence of :class:`ReservationItem` (one per offer to grant, in order):
the member's cap for the item (a surprise's yearly cap) is counted first, then the offer's
budget. On SQLite each count is its own conditional UPDATE, exactly as ``reserve_member_cap``
and ``reserve_budget`` do; on PostgreSQL the group's rows are locked first and the same
predicates are applied to the locked values (see :func:`_run_group_pg`). Either way no counter
can pass its limit whatever else shares the transaction or runs on another replica; only the
commit (one fsync for the whole group) is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from serving.store.tables import member_caps

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
_PARAM = {"sqlite": "?"}


def _sql(dialect: str) -> tuple[str, str, str]:
    p = _PARAM[dialect]
    return _CAP_BUMP.format(p=p), _BUDGET_BUMP.format(p=p), _BUDGET_EXISTS.format(p=p)


def _run_group(
    connection: Connection, insert: Any, requests: Sequence[Sequence[ReservationItem]], now: Any
) -> list[GrantOutcome]:
    """SQLite: one conditional UPDATE per count, in request order (statements are in-process
    calls of a few microseconds; the database has one writer at a time)."""
    from serving.store.store import UnknownBudgetError

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
    cap_sql, budget_sql, exists_sql = _sql(connection.dialect.name)
    # SQLite stores DateTime as text in SQLAlchemy's format.
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
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


_PG_LOCK_BUDGETS = (
    "SELECT offer_id, budget, spent FROM budgets WHERE offer_id = ANY(%s) "
    "ORDER BY offer_id FOR UPDATE"
)
_PG_CREATE_CAPS = (
    "INSERT INTO member_caps (member_id, cap_key, period, used, updated_at) "
    "SELECT v.m, v.k, v.p, 0, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(m, k, p) "
    "ORDER BY v.m, v.k, v.p ON CONFLICT (member_id, cap_key, period) DO NOTHING"
)
_PG_LOCK_CAPS = (
    "SELECT c.member_id, c.cap_key, c.period, c.used FROM member_caps AS c "
    "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS v(m, k, p) "
    "ON c.member_id = v.m AND c.cap_key = v.k AND c.period = v.p "
    "ORDER BY c.member_id, c.cap_key, c.period FOR UPDATE OF c"
)
_PG_WRITE_BUDGETS = (
    "UPDATE budgets AS b SET spent = v.spent, updated_at = %s "
    "FROM unnest(%s::text[], %s::float8[], %s::float8[]) AS v(offer_id, old, spent) "
    "WHERE b.offer_id = v.offer_id AND b.spent = v.old"
)
_PG_WRITE_CAPS = (
    "UPDATE member_caps AS c SET used = v.used, updated_at = %s "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::int[]) "
    "AS v(m, k, p, old, used) "
    "WHERE c.member_id = v.m AND c.cap_key = v.k AND c.period = v.p AND c.used = v.old"
)


class LostUpdateError(RuntimeError):
    """A locked counter changed under the group (never expected; the group is rolled back)."""


def _run_group_pg(
    connection: Connection, requests: Sequence[Sequence[ReservationItem]], now: Any
) -> list[GrantOutcome]:
    """PostgreSQL: a constant number of round trips per group, whatever its size.

    The group's budget rows, then its member cap rows, are locked in sorted order
    (``SELECT ... FOR UPDATE``: no other transaction on any replica can change them until the
    commit, and two replicas' writers queue instead of deadlocking); the counts are then applied
    request by request in Python with the same predicates as the conditional UPDATEs
    (``spent + amount <= budget``, ``used < cap``), and the new values are written with one
    UPDATE per table that also checks the values read (compare-and-set).
    """
    from serving.store.store import UnknownBudgetError

    cursor = connection.connection.cursor()
    try:
        offer_ids = sorted({i.offer_id for r in requests for i in r if i.amount and i.amount > 0})
        spent: dict[str, float] = {}
        limit: dict[str, float] = {}
        if offer_ids:
            cursor.execute(_PG_LOCK_BUDGETS, (offer_ids,))
            for offer_id, budget, used in cursor.fetchall():
                limit[offer_id], spent[offer_id] = float(budget), float(used)
        cap_keys = sorted(
            {(i.cap.member_id, i.cap.cap_key, i.cap.period) for r in requests for i in r if i.cap}
        )
        used: dict[tuple[str, str, str], int] = {}
        if cap_keys:
            columns = [list(c) for c in zip(*cap_keys, strict=True)]
            cursor.execute(_PG_CREATE_CAPS, (now, *columns))
            cursor.execute(_PG_LOCK_CAPS, columns)
            used = {(m, k, p): int(n) for m, k, p, n in cursor.fetchall()}
        spent0, used0 = dict(spent), dict(used)
        outcomes = []
        for request in requests:
            outcome = GrantOutcome()
            for index, item in enumerate(request):
                cap = item.cap
                if cap is not None:
                    key = (cap.member_id, cap.cap_key, cap.period)
                    if not used[key] < cap.cap:
                        continue
                    used[key] += 1
                if item.amount is not None and item.amount > 0:
                    if item.offer_id not in spent:
                        outcome.error = UnknownBudgetError(item.offer_id)
                        break
                    total = spent[item.offer_id] + float(item.amount)
                    if not total <= limit[item.offer_id] + _EPS:
                        outcome.exhausted.append(item.offer_id)
                        continue
                    spent[item.offer_id] = total
                outcome.granted.append(index)
            outcomes.append(outcome)
        changed = [o for o in spent if spent[o] != spent0[o]]
        if changed:
            old, new = [spent0[o] for o in changed], [spent[o] for o in changed]
            cursor.execute(_PG_WRITE_BUDGETS, (now, changed, old, new))
            if cursor.rowcount != len(changed):
                raise LostUpdateError(f"budgets changed under the group: {changed}")
        bumped = [k for k in used if used[k] != used0[k]]
        if bumped:
            m, k, p = (list(c) for c in zip(*bumped, strict=True))
            before, after = [used0[b] for b in bumped], [used[b] for b in bumped]
            cursor.execute(_PG_WRITE_CAPS, (now, m, k, p, before, after))
            if cursor.rowcount != len(bumped):
                raise LostUpdateError("member caps changed under the group")
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
                if connection.dialect.name == "postgresql":
                    return _run_group_pg(connection, requests, utcnow())
                return _run_group(connection, store._insert, requests, utcnow())
        except OperationalError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in _RETRY_SQLSTATES or attempt == RETRIES:
                raise
            log.warning("grant group rolled back (%s), retrying (%d)", code, attempt + 1)
    raise AssertionError("unreachable")
