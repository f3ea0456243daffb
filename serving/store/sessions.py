"""Checkout session state changes, grant releases, the sweep and member history reads.

A session is written ``open`` with its grants and reservations by the group commit
(:mod:`serving.store.reserve`). Its states (after Talon.One customer sessions)::

    open --close--> closed --cancel--> cancelled
      |                \\--cancel offer_ids--> partially_returned --cancel--> ...
      \\--cancel--> cancelled            (the sweep cancels sessions left open too long)

A cancel releases the budget amount and every cap counter each of its rewards reserved,
exactly (the ``grants`` row says what), unless the reward was redeemed: a redeemed reward
stays counted. Grant states: granted -> redeemed (feedback), released (cancel, return,
abandoned session) or expired (validity ended unredeemed: budget back, caps still counted).
Every change is one transaction that re-checks the state it changes (a
conditional UPDATE), so repeating it or running it on two replicas at once changes nothing
twice. Illegal transitions raise :class:`IllegalTransition` naming the current state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select, tuple_, update

from serving.store.tables import budgets, checkout_sessions, grants, member_caps

__all__ = [
    "IllegalTransition",
    "SessionChange",
    "SweepResult",
    "UnknownOffers",
    "UnknownSession",
    "cancel_session",
    "check_sweep_options",
    "close_session",
    "get_session",
    "mark_redeemed",
    "member_grants",
    "sweep",
]

log = logging.getLogger(__name__)

MAX_BATCH = 1_000  # sessions or grants per sweep transaction (bound parameters of an IN list)
_UPDATE_CHUNK = 400  # grant rows per UPDATE statement (two bound parameters each)

STATES = ("open", "closed", "cancelled", "partially_returned")


class UnknownSession(KeyError):
    """No checkout session has this transaction id."""

    def __str__(self) -> str:
        return f"transaction_id {self.args[0]!r} is unknown"


class IllegalTransition(RuntimeError):
    """The session's current state does not allow the change (the message names the state)."""

    def __init__(self, transaction_id: str, state: str, action: str) -> None:
        super().__init__(f"transaction_id {transaction_id!r} is {state}: cannot {action}")
        self.transaction_id, self.state, self.action = transaction_id, state, action


class UnknownOffers(ValueError):
    """A partial cancel names offers the transaction did not grant."""

    def __init__(self, transaction_id: str, offer_ids: Sequence[str]) -> None:
        super().__init__(
            f"offer_ids {sorted(offer_ids)} were not granted in transaction_id {transaction_id!r}"
        )
        self.offer_ids = list(offer_ids)


@dataclass
class SessionChange:
    """A state change's result: the state now and the offers released by this call."""

    transaction_id: str
    member_id: str
    state: str
    released: list[str] = field(default_factory=list)
    kept_redeemed: list[str] = field(default_factory=list)


@dataclass
class SweepResult:
    """Grants released because their validity ended; sessions cancelled because they were left
    open (the answer never confirmed by the till) past the limit."""

    expired_grants: int = 0
    abandoned_sessions: int = 0
    released_grants: int = 0
    members: set[str] = field(default_factory=set)


def _lock(connection: Connection, query: Any) -> Any:
    return query.with_for_update() if connection.dialect.name == "postgresql" else query


def _write_lock(connection: Connection) -> None:
    """SQLite: take the database's write lock before the first read of the transaction (a
    read-then-write transaction whose snapshot went stale would fail instead of waiting);
    PostgreSQL locks the rows it reads instead."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("UPDATE checkout_sessions SET state = state WHERE 0")


def get_session(engine: Any, transaction_id: str) -> dict[str, Any] | None:
    """The session row (``response`` decoded) or None."""
    with engine.connect() as connection:
        row = connection.execute(
            select(checkout_sessions).where(checkout_sessions.c.transaction_id == transaction_id)
        ).first()
    return None if row is None else dict(row._mapping)


def _release(
    connection: Connection, rows: Sequence[Any], now: datetime, *, expired: bool = False
) -> list[Any]:
    """Release granted grant rows (cancel, partial return and the sweep); returns the rows
    released. Only rows still ``granted`` change (released or redeemed meanwhile: left alone):
    state -> released, and each one gives back its budget amount (``max(spent - amount, 0)``)
    and one use of each cap it counted (``used - 1`` while ``used > 0``), each counter's steps in
    the rows' order (tests/unit/test_checkout_store.py checks the end state against a plain
    Python model of this rule).

    ``expired``: the reward reached the member and lapsed unredeemed: state -> expired, the
    budget is given back but the caps stay counted (the member did receive it).

    The grants' state changes are one ``UPDATE ... RETURNING`` per ``_UPDATE_CHUNK`` rows; the
    give-backs one executemany for budgets and one for caps, in sorted counter order (the
    order in which the group commit locks them on PostgreSQL, so a sweep and a checkout never
    wait for each other in a cycle)."""
    new_state = "expired" if expired else "released"
    done: set[tuple[str, str]] = set()
    for start in range(0, len(rows), _UPDATE_CHUNK):
        keys = [(g.transaction_id, g.offer_id) for g in rows[start : start + _UPDATE_CHUNK]]
        changed = connection.execute(
            update(grants)
            .where(tuple_(grants.c.transaction_id, grants.c.offer_id).in_(keys))
            .where(grants.c.state == "granted")  # released or redeemed meanwhile: left alone
            .values(state=new_state, released_at=now)
            .returning(grants.c.transaction_id, grants.c.offer_id)
        )
        done.update((t, o) for t, o in changed)
    released = [g for g in rows if (g.transaction_id, g.offer_id) in done]
    # stable sorts: each counter's steps stay in the rows' order
    amounts = sorted(
        ((g.offer_id, float(g.amount)) for g in released if g.amount is not None and g.amount > 0),
        key=lambda step: step[0],
    )
    if amounts:
        floor = func.max if connection.dialect.name == "sqlite" else func.greatest
        connection.execute(
            update(budgets)
            .where(budgets.c.offer_id == bindparam("b_offer"))
            .values(spent=floor(budgets.c.spent - bindparam("b_amount"), 0.0), updated_at=now),
            [{"b_offer": o, "b_amount": a} for o, a in amounts],
        )
    counted = [] if expired else [(g.member_id, k, p) for g in released for k, p in g.caps or []]
    if counted:
        connection.execute(
            update(member_caps)
            .where(member_caps.c.member_id == bindparam("c_member"))
            .where(member_caps.c.cap_key == bindparam("c_key"))
            .where(member_caps.c.period == bindparam("c_period"))
            .where(member_caps.c.used > 0)
            .values(used=member_caps.c.used - 1, updated_at=now),
            [{"c_member": m, "c_key": k, "c_period": p} for m, k, p in sorted(counted)],
        )
    return released


def _session_for_change(connection: Connection, transaction_id: str) -> Any:
    _write_lock(connection)
    row = connection.execute(
        _lock(
            connection,
            select(checkout_sessions.c.member_id, checkout_sessions.c.state).where(
                checkout_sessions.c.transaction_id == transaction_id
            ),
        )
    ).first()
    if row is None:
        raise UnknownSession(transaction_id)
    return row


def _set_state(connection: Connection, transaction_id: str, old: str, new: str, now: datetime):
    if old == new:
        return
    done = connection.execute(
        update(checkout_sessions)
        .where(checkout_sessions.c.transaction_id == transaction_id)
        .where(checkout_sessions.c.state == old)
        .values(state=new, updated_at=now)
    ).rowcount
    if done != 1:  # changed by another transaction since read (SQLite: no row lock)
        raise IllegalTransition(transaction_id, "changed concurrently", f"go {old} -> {new}")


def close_session(engine: Any, transaction_id: str, now: datetime) -> SessionChange:
    """open -> closed (the till confirms it got the answer); closed again: no change."""
    with engine.begin() as connection:
        s = _session_for_change(connection, transaction_id)
        if s.state not in ("open", "closed"):
            raise IllegalTransition(transaction_id, s.state, "close")
        _set_state(connection, transaction_id, s.state, "closed", now)
    return SessionChange(transaction_id, s.member_id, "closed")


def cancel_session(
    engine: Any, transaction_id: str, now: datetime, offer_ids: Sequence[str] | None = None
) -> SessionChange:
    """Void the whole transaction (``offer_ids`` None) or some of its rewards (a partial
    return: the session must be closed first). Rewards not redeemed are released; redeemed ones
    stay counted. A cancelled session cancelled again changes nothing."""
    with engine.begin() as connection:
        s = _session_for_change(connection, transaction_id)
        if s.state == "cancelled":
            return SessionChange(transaction_id, s.member_id, "cancelled")
        if offer_ids is not None and s.state == "open":
            raise IllegalTransition(transaction_id, s.state, "return part of it before close")
        rows = connection.execute(
            _lock(connection, select(grants).where(grants.c.transaction_id == transaction_id))
        ).all()
        if offer_ids is not None:
            unknown = set(offer_ids) - {g.offer_id for g in rows}
            if unknown:
                raise UnknownOffers(transaction_id, sorted(unknown))
        chosen = [g for g in rows if offer_ids is None or g.offer_id in set(offer_ids)]
        granted = [g for g in chosen if g.state == "granted"]
        released = [g.offer_id for g in _release(connection, granted, now)]
        redeemed = [g.offer_id for g in chosen if g.state == "redeemed"]
        remaining = [g for g in rows if g.state == "granted" and g.offer_id not in set(released)]
        new = "cancelled" if offer_ids is None or not remaining else "partially_returned"
        _set_state(connection, transaction_id, s.state, new, now)
    return SessionChange(transaction_id, s.member_id, new, released, redeemed)


def check_sweep_options(limit: Any, batch: Any, pause: Any) -> None:
    """Raise ValueError naming the option and its value unless ``limit`` is a positive integer,
    ``batch`` an integer in [1, MAX_BATCH] and ``pause`` a number of seconds in [0, 1]."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit: {limit!r} is not a positive integer")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch: {batch!r} is not an integer in [1, {MAX_BATCH}]")
    if isinstance(pause, bool) or not isinstance(pause, int | float) or not 0 <= pause <= 1:
        raise ValueError(f"pause: {pause!r} is not a number of seconds in [0, 1]")


def _skip_locked(connection: Connection, query: Any) -> Any:
    """PostgreSQL: lock the rows read, skipping rows another transaction holds (a concurrent
    sweep's batch, a cancel in progress): they are that transaction's to change."""
    if connection.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def sweep(
    engine: Any,
    now: datetime,
    open_seconds: float,
    limit: int = 10_000,
    *,
    batch: int = 200,
    pause: float = 0.05,
) -> SweepResult:
    """Expire grants whose validity ended unredeemed (their budget is given back, their caps
    stay counted: the member received them), and cancel sessions still open ``open_seconds``
    after they were created (everything their rewards reserved is given back: the answer may
    never have reached the till). At most ``limit`` of each per call; concurrent sweeps on
    several replicas release nothing twice.

    The work is done ``batch`` grants or sessions per write transaction with ``pause`` seconds
    between transactions, so the SQLite write lock and PostgreSQL's budget and cap rows are
    held for one batch at a time and a checkout waiting for them gets them between two batches.
    SQLite's busy handler polls (a waiting connection sleeps 1, 2, 5 ... 50 ms between tries),
    so without a pause of that order the sweep takes the lock straight back. Each batch re-reads
    what it changes under the lock (grants still ``granted``, sessions still ``open``); on
    PostgreSQL rows another transaction holds are skipped, not waited for.
    """
    check_sweep_options(limit, batch, pause)
    result = SweepResult()
    transactions = 0

    def rest() -> None:
        if transactions and pause:
            time.sleep(pause)  # let a waiting checkout take the lock

    seen = 0
    while seen < limit:
        rest()
        size = min(batch, limit - seen)
        with engine.begin() as connection:
            _write_lock(connection)
            rows = connection.execute(
                _skip_locked(
                    connection,
                    select(grants)
                    .where(grants.c.state == "granted")
                    .where(grants.c.valid_until.is_not(None))
                    .where(grants.c.valid_until < now)
                    .order_by(grants.c.transaction_id, grants.c.offer_id)
                    .limit(size),
                )
            ).all()
            released = _release(connection, rows, now, expired=True)
        transactions += 1
        result.expired_grants += len(released)
        result.members.update(g.member_id for g in released)
        seen += len(rows)
        if len(rows) < size:
            break
    cutoff = now - timedelta(seconds=open_seconds)
    seen = 0
    while seen < limit:
        rest()
        size = min(batch, limit - seen)
        released = []
        with engine.begin() as connection:
            _write_lock(connection)
            stale = connection.execute(
                _skip_locked(
                    connection,
                    select(checkout_sessions.c.transaction_id, checkout_sessions.c.member_id)
                    .where(checkout_sessions.c.state == "open")
                    .where(checkout_sessions.c.created_at < cutoff)
                    .order_by(checkout_sessions.c.created_at, checkout_sessions.c.transaction_id)
                    .limit(size),
                )
            ).all()
            ids = [s.transaction_id for s in stale]
            if ids:
                rows = connection.execute(
                    _lock(
                        connection,
                        select(grants)
                        .where(grants.c.transaction_id.in_(ids))
                        .where(grants.c.state == "granted")
                        .order_by(grants.c.transaction_id, grants.c.offer_id),
                    )
                ).all()
                released = _release(connection, rows, now)
                cancelled = connection.execute(
                    update(checkout_sessions)
                    .where(checkout_sessions.c.transaction_id.in_(ids))
                    .where(checkout_sessions.c.state == "open")
                    .values(state="cancelled", updated_at=now)
                ).rowcount
                if cancelled != len(ids):  # the write lock / row locks above prevent it
                    raise IllegalTransition(ids[0], "changed concurrently", "go open -> cancelled")
        transactions += 1
        result.released_grants += len(released)
        result.abandoned_sessions += len(ids)
        result.members.update(s.member_id for s in stale)
        seen += len(ids)
        if len(ids) < size:
            break
    if result.expired_grants or result.abandoned_sessions:
        log.info(
            "sweep: %d expired grants released, %d abandoned sessions cancelled (%d grants) "
            "in %d transactions",
            result.expired_grants,
            result.abandoned_sessions,
            result.released_grants,
            transactions,
        )
    return result


def member_grants(engine: Any, member_id: str) -> list[Any]:
    """The member's grants not released (granted, redeemed or expired unredeemed), oldest
    first, as engine history."""
    from serving.engine.state import PastGrant  # the engine package is heavy: import on use

    with engine.connect() as connection:
        rows = connection.execute(
            select(
                grants.c.offer_id,
                grants.c.channel,
                grants.c.granted_at,
                grants.c.surprise,
                grants.c.state,
                grants.c.decision_id,
            )
            .where(grants.c.member_id == member_id)
            .where(grants.c.state != "released")
            .order_by(grants.c.granted_at, grants.c.offer_id)
        ).all()
    return [
        PastGrant(
            r.offer_id,
            r.channel,
            r.granted_at,
            bool(r.surprise),
            r.state == "redeemed",
            r.decision_id,
        )
        for r in rows
    ]


def live_grants(engine: Any, limit: int) -> list[tuple[str, Any]] | None:
    """Every grant not released as ``(member_id, PastGrant)``, oldest first (each member's in
    :func:`member_grants`' order), or None when there are more than ``limit``: the member
    history reads them all at once instead of member by member."""
    from serving.engine.state import PastGrant

    with engine.connect() as connection:
        rows = connection.execute(
            select(
                grants.c.member_id,
                grants.c.offer_id,
                grants.c.channel,
                grants.c.granted_at,
                grants.c.surprise,
                grants.c.state,
                grants.c.decision_id,
            )
            .where(grants.c.state != "released")
            .order_by(grants.c.granted_at, grants.c.offer_id)
            .limit(limit + 1)
        ).all()
    if len(rows) > limit:
        return None
    return [
        (
            r.member_id,
            PastGrant(
                r.offer_id,
                r.channel,
                r.granted_at,
                bool(r.surprise),
                r.state == "redeemed",
                r.decision_id,
            ),
        )
        for r in rows
    ]


def members_with_grants(engine: Any) -> list[str]:
    """Ids of the members with at least one grant not released."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(grants.c.member_id).where(grants.c.state != "released").distinct()
        ).scalars()
        return list(rows)


def mark_redeemed(
    engine: Any, redemptions: Sequence[tuple[str, str, str | None]], now: datetime
) -> list[tuple[str, str]]:
    """Mark granted rewards redeemed from ``(member_id, offer_id, decision_id)`` feedback:
    the grant of that decision, or (no decision id) the member's latest grant of the offer
    still granted. Returns the (transaction_id, offer_id) marked."""
    marked: list[tuple[str, str]] = []
    if not redemptions:
        return marked
    with engine.begin() as connection:
        _write_lock(connection)
        for member_id, offer_id, decision_id in redemptions:
            where = and_(
                grants.c.member_id == member_id,
                grants.c.offer_id == offer_id,
                grants.c.state == "granted",
            )
            if decision_id is not None:
                where = and_(where, grants.c.decision_id == decision_id)
            row = connection.execute(
                select(grants.c.transaction_id)
                .where(where)
                .order_by(grants.c.granted_at.desc())
                .limit(1)
            ).first()
            if row is None:
                continue
            done = connection.execute(
                update(grants)
                .where(grants.c.transaction_id == row.transaction_id)
                .where(grants.c.offer_id == offer_id)
                .where(grants.c.state == "granted")
                .values(state="redeemed", redeemed_at=now)
            ).rowcount
            if done == 1:
                marked.append((row.transaction_id, offer_id))
    return marked


def grant_counts(engine: Any) -> dict[str, dict[str, int]]:
    """Grant rows per offer and state (audits and tests: reserved = delivered + released)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(grants.c.offer_id, grants.c.state, func.count()).group_by(
                grants.c.offer_id, grants.c.state
            )
        ).all()
    out: dict[str, dict[str, int]] = {}
    for offer_id, state, n in rows:
        out.setdefault(offer_id, {})[state] = int(n)
    return out
