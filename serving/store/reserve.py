"""Many grant reservations in one transaction (the group commit of ``serving.api.grants``).

A grant request is a :class:`GrantRequest`: a sequence of :class:`ReservationItem` (one per
offer to grant, in order) and, at checkout, the :class:`SessionRecord` of its transaction. Per
request, in one transaction with the rest of the group:

1. the session row is inserted first; when its ``transaction_id`` is already stored (a retry,
   here or on another replica) the request reserves nothing and is marked ``duplicate``;
2. per item, every cap counter (lifetime per-offer cap, channel frequency cap, yearly surprise
   cap) is counted, then the offer's budget; an item that fails any of them is dropped, named
   with its reason, and whatever it had counted is given back;
3. one ``grants`` row per granted item records what it reserved, and the session row gets the
   final answer (rewards granted, rewards dropped).

On SQLite each count is its own conditional UPDATE, exactly as ``reserve_member_cap`` and
``reserve_budget`` do; on PostgreSQL the group's rows are locked first and the same predicates
are applied to the locked values (see :func:`_run_group_pg`: a constant number of round trips
per group). Either way no counter can pass its limit whatever else shares the transaction or
runs on another replica, and a crash never leaves a reservation that no session owns; only the
commit (one fsync for the whole group) is shared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from serving.store.clock import utcnow
from serving.store.errors import UnknownBudgetError

__all__ = [
    "CapKey",
    "GrantOutcome",
    "GrantRequest",
    "ReservationItem",
    "SessionRecord",
    "cap_reason",
    "reserve_grants",
]

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


def cap_reason(cap_key: str) -> str:
    """The reason a reward dropped at this cap is named with in the answer."""
    if cap_key.startswith("offer:"):
        return "per_member_cap"
    if cap_key.startswith("channel:"):
        return "frequency_cap"
    return "surprise_cap"


@dataclass(frozen=True, slots=True)
class ReservationItem:
    """What granting one offer needs: member cap counts and/or a budget amount (or neither).

    ``cap`` (one counter) and ``caps`` (more) are all counted; the item is granted only when
    every one of them and the budget have room.
    """

    offer_id: str
    cap: CapKey | None = None
    amount: float | None = None  # None or <= 0: the offer's budget is not touched
    caps: tuple[CapKey, ...] = ()

    def __post_init__(self) -> None:
        for c in self.all_caps:
            if c.cap < 0:
                raise ValueError(f"cap for {c.cap_key!r} must be >= 0, got {c.cap}")

    @property
    def all_caps(self) -> tuple[CapKey, ...]:
        return self.caps if self.cap is None else (self.cap, *self.caps)

    @property
    def reserves(self) -> bool:
        """True when granting it counts anything in the store."""
        return bool(self.all_caps) or bool(self.amount and self.amount > 0)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """The checkout transaction a request belongs to, stored in the same transaction.

    ``response`` is the answer with ``rewards`` aligned with the request's items; the stored
    answer keeps the granted ones and adds ``dropped``. ``valid_until`` and ``surprise`` are
    per item too.
    """

    transaction_id: str
    member_id: str
    decision_id: str
    channel: str
    response: dict[str, Any]
    valid_until: tuple[datetime | None, ...] = ()
    surprise: tuple[bool, ...] = ()
    client_ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """One checkout's reservations, with its session (None: reservations only)."""

    items: tuple[ReservationItem, ...]
    session: SessionRecord | None = None


@dataclass(slots=True)
class GrantOutcome:
    """Result of one request: indices of the granted items, offers found spent, items dropped
    (index, reason: ``per_member_cap``, ``frequency_cap``, ``surprise_cap``, ``budget``), or an
    error; ``duplicate`` when its transaction was already stored (nothing reserved: read the
    stored answer); ``response`` the answer stored with the session.

    ``error`` is set (UnknownBudgetError) when an item names an offer without a budget counter;
    the items before it keep their reservations, as with one ``reserve_budget`` call per item.
    """

    granted: list[int] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)
    error: Exception | None = None
    dropped: list[tuple[int, str]] = field(default_factory=list)
    duplicate: bool = False
    response: dict[str, Any] | None = None


def _as_request(r: GrantRequest | Sequence[ReservationItem]) -> GrantRequest:
    return r if isinstance(r, GrantRequest) else GrantRequest(tuple(r))


def final_response(session: SessionRecord, items: Sequence[ReservationItem], o: GrantOutcome):
    """The answer stored for the session: the granted rewards, the dropped ones named."""
    rewards = session.response.get("rewards", [])
    return {
        **session.response,
        "rewards": [rewards[i] for i in o.granted],
        "dropped": [{"offer_id": items[i].offer_id, "reason": why} for i, why in o.dropped],
    }


def _grant_rows(req: GrantRequest, o: GrantOutcome, now: datetime) -> list[tuple]:
    """(transaction_id, offer_id, member_id, decision_id, channel, surprise, amount, caps json,
    granted_at, valid_until) per granted item."""
    s = req.session
    if s is None:
        return []
    rows = []
    for i in o.granted:
        item = req.items[i]
        amount = float(item.amount) if item.amount and item.amount > 0 else None
        caps = json.dumps([[c.cap_key, c.period] for c in item.all_caps])
        surprise = bool(s.surprise[i]) if i < len(s.surprise) else False
        until = s.valid_until[i] if i < len(s.valid_until) else None
        rows.append(
            (s.transaction_id, item.offer_id, s.member_id, s.decision_id, s.channel, surprise,
             amount, caps, now, until)
        )  # fmt: skip
    return rows


# Plain SQL on the DBAPI cursor: each reservation is one short statement, and SQLAlchemy's
# per-execute overhead (~60 us) would dominate a group's time. Same predicates as
# OffersStore.reserve_member_cap / reserve_budget.
# One statement per cap count: creates the counter at 1, or adds 1 while under the cap.
_CAP_BUMP = (
    "INSERT INTO member_caps (member_id, cap_key, period, used, updated_at) "
    "VALUES (?, ?, ?, 1, ?) ON CONFLICT (member_id, cap_key, period) "
    "DO UPDATE SET used = used + 1, updated_at = excluded.updated_at WHERE used < ?"
)
_CAP_UNDO = (
    "UPDATE member_caps SET used = used - 1 WHERE member_id = ? AND cap_key = ? AND period = ?"
)
_BUDGET_BUMP = (
    "UPDATE budgets SET spent = spent + ?, updated_at = ? "
    f"WHERE offer_id = ? AND spent + ? <= budget + {_EPS!r}"
)
_BUDGET_EXISTS = "SELECT 1 FROM budgets WHERE offer_id = ?"
_SESSION_INSERT = (
    "INSERT INTO checkout_sessions (transaction_id, member_id, decision_id, channel, state, "
    "response, client_ts, created_at, updated_at) VALUES (?, ?, ?, ?, 'open', NULL, ?, ?, ?) "
    "ON CONFLICT (transaction_id) DO NOTHING"
)
_SESSION_ANSWER = "UPDATE checkout_sessions SET response = ? WHERE transaction_id = ?"
_GRANT_INSERT = (
    "INSERT INTO grants (transaction_id, offer_id, member_id, decision_id, channel, surprise, "
    "amount, caps, state, granted_at, valid_until) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'granted', ?, ?)"
)


def _stamp(t: datetime | None) -> str | None:
    # SQLite stores DateTime as text in SQLAlchemy's format.
    return None if t is None else t.strftime("%Y-%m-%d %H:%M:%S.%f")


def _run_group(
    connection: Connection, requests: Sequence[GrantRequest], now: datetime
) -> list[GrantOutcome]:
    """SQLite: one conditional UPDATE per count, in request order (statements are in-process
    calls of a few microseconds; the database has one writer at a time)."""
    stamp = _stamp(now)
    cursor = connection.connection.cursor()  # the DBAPI cursor, inside the same transaction
    try:
        fresh: list[bool] = []
        for req in requests:  # first: takes the write lock, finds retries
            s = req.session
            if s is None:
                fresh.append(True)
                continue
            cursor.execute(
                _SESSION_INSERT,
                (s.transaction_id, s.member_id, s.decision_id, s.channel, _stamp(s.client_ts),
                 stamp, stamp),
            )  # fmt: skip
            fresh.append(cursor.rowcount == 1)
        outcomes = []
        grant_rows: list[tuple] = []
        for req, new in zip(requests, fresh, strict=True):
            outcome = GrantOutcome(duplicate=not new)
            outcomes.append(outcome)
            if not new:
                continue
            for index, item in enumerate(req.items):
                counted: list[CapKey] = []
                for cap in item.all_caps:
                    if cap.cap > 0:
                        cursor.execute(
                            _CAP_BUMP,
                            (cap.member_id, cap.cap_key, cap.period, stamp, int(cap.cap)),
                        )
                    if cap.cap <= 0 or cursor.rowcount != 1:
                        outcome.dropped.append((index, cap_reason(cap.cap_key)))
                        break
                    counted.append(cap)
                if len(counted) != len(item.all_caps):
                    _undo_caps(cursor, counted)
                    continue
                if item.amount is not None and item.amount > 0:
                    amount = float(item.amount)
                    cursor.execute(_BUDGET_BUMP, (amount, stamp, item.offer_id, amount))
                    if cursor.rowcount != 1:
                        _undo_caps(cursor, counted)
                        cursor.execute(_BUDGET_EXISTS, (item.offer_id,))
                        if cursor.fetchone() is None:
                            outcome.error = UnknownBudgetError(item.offer_id)
                            break
                        outcome.exhausted.append(item.offer_id)
                        outcome.dropped.append((index, "budget"))
                        continue
                outcome.granted.append(index)
            if req.session is not None:
                rows = _grant_rows(req, outcome, now)
                grant_rows.extend((*r[:8], stamp, _stamp(r[9])) for r in rows)
                outcome.response = final_response(req.session, req.items, outcome)
                cursor.execute(
                    _SESSION_ANSWER,
                    (json.dumps(outcome.response), req.session.transaction_id),
                )
        if grant_rows:
            cursor.executemany(_GRANT_INSERT, grant_rows)
    finally:
        cursor.close()
    return outcomes


def _undo_caps(cursor: Any, counted: Sequence[CapKey]) -> None:
    for cap in counted:
        cursor.execute(_CAP_UNDO, (cap.member_id, cap.cap_key, cap.period))


_PG_INSERT_SESSIONS = (
    "INSERT INTO checkout_sessions (transaction_id, member_id, decision_id, channel, state, "
    "response, client_ts, created_at, updated_at) "
    "SELECT v.t, v.m, v.d, v.c, 'open', NULL, v.ts, %s, %s FROM unnest("
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamp[]) AS v(t, m, d, c, ts) "
    "ORDER BY v.t ON CONFLICT (transaction_id) DO NOTHING RETURNING transaction_id"
)
_PG_LOCK_BUDGETS = (
    "SELECT offer_id, budget, spent FROM budgets WHERE offer_id = ANY(%s) "
    "ORDER BY offer_id FOR UPDATE"
)
# Creates the missing cap counters at 0 and locks every one of them (the no-op DO UPDATE takes
# the row lock of an existing row), in sorted order, returning the counts: one round trip.
_PG_LOCK_CAPS = (
    "INSERT INTO member_caps (member_id, cap_key, period, used, updated_at) "
    "SELECT v.m, v.k, v.p, 0, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(m, k, p) "
    "ORDER BY v.m, v.k, v.p ON CONFLICT (member_id, cap_key, period) "
    "DO UPDATE SET used = member_caps.used RETURNING member_id, cap_key, period, used"
)
# Every write of the group in one statement (data-modifying CTEs): counters compare-and-set
# against the values read under lock, grant rows, the sessions' answers.
_PG_WRITE = """
WITH b AS (
    UPDATE budgets AS b SET spent = v.spent, updated_at = %(now)s
    FROM unnest(%(b_id)s::text[], %(b_old)s::float8[], %(b_new)s::float8[])
        AS v(offer_id, old, spent)
    WHERE b.offer_id = v.offer_id AND b.spent = v.old RETURNING 1
), c AS (
    UPDATE member_caps AS c SET used = v.used, updated_at = %(now)s
    FROM unnest(%(c_m)s::text[], %(c_k)s::text[], %(c_p)s::text[], %(c_old)s::int[],
                %(c_new)s::int[]) AS v(m, k, p, old, used)
    WHERE c.member_id = v.m AND c.cap_key = v.k AND c.period = v.p AND c.used = v.old
    RETURNING 1
), g AS (
    INSERT INTO grants (transaction_id, offer_id, member_id, decision_id, channel, surprise,
                        amount, caps, state, granted_at, valid_until)
    SELECT v.t, v.o, v.m, v.d, v.c, v.s, v.a, v.caps::json, 'granted', %(now)s, v.u
    FROM unnest(%(g_t)s::text[], %(g_o)s::text[], %(g_m)s::text[], %(g_d)s::text[],
                %(g_c)s::text[], %(g_s)s::bool[], %(g_a)s::float8[], %(g_caps)s::text[],
                %(g_u)s::timestamp[]) AS v(t, o, m, d, c, s, a, caps, u)
    RETURNING 1
), s AS (
    UPDATE checkout_sessions AS s SET response = v.r::json
    FROM unnest(%(s_t)s::text[], %(s_r)s::text[]) AS v(t, r) WHERE s.transaction_id = v.t
    RETURNING 1
)
SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM c)
"""


class LostUpdateError(RuntimeError):
    """A locked counter changed under the group (never expected; the group is rolled back)."""


def _columns(rows: Sequence[tuple], n: int) -> list[list]:
    """Column lists of ``rows`` (``n`` empty lists when there are none)."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(n)]


def _run_group_pg(
    connection: Connection, requests: Sequence[GrantRequest], now: datetime
) -> list[GrantOutcome]:
    """PostgreSQL: a constant number of round trips per group, whatever its size: insert the
    sessions, lock the budgets, create-and-lock the caps, write everything, commit.

    The group's sessions are inserted first (a transaction id stored by another replica waits
    for that commit, then counts as a retry). The budget rows, then the member cap rows, are
    locked in sorted order (``SELECT ... FOR UPDATE``; for caps an upsert whose no-op update
    locks: no other transaction on any replica can change them until the commit, and two
    replicas' writers queue instead of deadlocking); the counts are then applied request by
    request in Python with the same predicates as the conditional UPDATEs
    (``spent + amount <= budget``, ``used < cap``), and the new values, the grant rows and the
    answers are written by one statement whose counter updates also check the values read
    (compare-and-set).
    """
    cursor = connection.connection.cursor()
    try:
        fresh = [True] * len(requests)
        sessions = {r.session.transaction_id: r.session for r in requests if r.session}
        if sessions:
            rows = list(sessions.values())
            cursor.execute(
                _PG_INSERT_SESSIONS,
                (now, now, [s.transaction_id for s in rows], [s.member_id for s in rows],
                 [s.decision_id for s in rows], [s.channel for s in rows],
                 [s.client_ts for s in rows]),
            )  # fmt: skip
            inserted = {t for (t,) in cursor.fetchall()}
            claimed: set[str] = set()
            for n, r in enumerate(requests):
                if r.session is None:
                    continue
                t = r.session.transaction_id
                fresh[n] = t in inserted and t not in claimed  # a repeat in the group: a retry
                claimed.add(t)
        live = [r for r, new in zip(requests, fresh, strict=True) if new]
        offer_ids = sorted({i.offer_id for r in live for i in r.items if i.amount and i.amount > 0})
        spent: dict[str, float] = {}
        limit: dict[str, float] = {}
        if offer_ids:
            cursor.execute(_PG_LOCK_BUDGETS, (offer_ids,))
            for offer_id, budget, used_ in cursor.fetchall():
                limit[offer_id], spent[offer_id] = float(budget), float(used_)
        cap_keys = sorted(
            {(c.member_id, c.cap_key, c.period) for r in live for i in r.items for c in i.all_caps}
        )
        used: dict[tuple[str, str, str], int] = {}
        if cap_keys:
            cursor.execute(_PG_LOCK_CAPS, (now, *_columns(cap_keys, 3)))
            used = {(m, k, p): int(n) for m, k, p, n in cursor.fetchall()}
        spent0, used0 = dict(spent), dict(used)
        outcomes = []
        grant_rows: list[tuple] = []
        answers: list[tuple[str, str]] = []
        for req, new in zip(requests, fresh, strict=True):
            outcome = GrantOutcome(duplicate=not new)
            outcomes.append(outcome)
            if not new:
                continue
            for index, item in enumerate(req.items):
                caps = item.all_caps
                keys = [(c.member_id, c.cap_key, c.period) for c in caps]
                full = next(
                    (c for c, k in zip(caps, keys, strict=True) if not used[k] < c.cap), None
                )
                if full is not None:
                    outcome.dropped.append((index, cap_reason(full.cap_key)))
                    continue
                if item.amount is not None and item.amount > 0:
                    if item.offer_id not in spent:
                        outcome.error = UnknownBudgetError(item.offer_id)
                        break
                    total = spent[item.offer_id] + float(item.amount)
                    if not total <= limit[item.offer_id] + _EPS:
                        outcome.exhausted.append(item.offer_id)
                        outcome.dropped.append((index, "budget"))
                        continue
                    spent[item.offer_id] = total
                for k in keys:
                    used[k] += 1
                outcome.granted.append(index)
            if req.session is not None:
                grant_rows.extend(_grant_rows(req, outcome, now))
                outcome.response = final_response(req.session, req.items, outcome)
                answers.append((req.session.transaction_id, json.dumps(outcome.response)))
        changed = [o for o in spent if spent[o] != spent0[o]]
        bumped = [k for k in used if used[k] != used0[k]]
        if changed or bumped or grant_rows or answers:
            g = _columns(grant_rows, 10)
            c_m, c_k, c_p = _columns(bumped, 3)
            s_t, s_r = _columns(answers, 2)
            params = {
                "now": now,
                "b_id": changed,
                "b_old": [spent0[o] for o in changed],
                "b_new": [spent[o] for o in changed],
                "c_m": c_m, "c_k": c_k, "c_p": c_p,
                "c_old": [used0[b] for b in bumped],
                "c_new": [used[b] for b in bumped],
                "g_t": g[0], "g_o": g[1], "g_m": g[2], "g_d": g[3], "g_c": g[4], "g_s": g[5],
                "g_a": g[6], "g_caps": g[7], "g_u": g[9],
                "s_t": s_t, "s_r": s_r,
            }  # fmt: skip
            cursor.execute(_PG_WRITE, params)
            counts = cursor.fetchone()
            if counts is None:  # the statement ends in one SELECT of two counts
                raise LostUpdateError("the group's write returned no counts")
            n_budgets, n_caps = counts
            if n_budgets != len(changed):
                raise LostUpdateError(f"budgets changed under the group: {changed}")
            if n_caps != len(bumped):
                raise LostUpdateError("member caps changed under the group")
    finally:
        cursor.close()
    return outcomes


def reserve_grants(
    store: Any, requests: Sequence[GrantRequest | Sequence[ReservationItem]]
) -> list[GrantOutcome]:
    """Run every request's session insert and reservations in one transaction and commit once;
    one outcome each.

    Raises (and commits nothing) when the database fails; a PostgreSQL deadlock or
    serialization failure is retried up to ``RETRIES`` times.
    """
    if not requests:
        return []
    group = [_as_request(r) for r in requests]
    for attempt in range(RETRIES + 1):
        try:
            with store.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    return _run_group_pg(connection, group, utcnow())
                return _run_group(connection, group, utcnow())
        except OperationalError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in _RETRY_SQLSTATES or attempt == RETRIES:
                raise
            log.warning("grant group rolled back (%s), retrying (%d)", code, attempt + 1)
    raise AssertionError("unreachable")
