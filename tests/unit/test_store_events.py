"""Feedback events in the store, on SQLite and a real PostgreSQL: an id stored with other
contents is a conflict (nothing of the call stored, the first kept); a replay is a duplicate;
a write lock held by another process fails fast with the serving lock wait."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from serving.store import OffersStore, open_store
from serving.store.feedback import EventConflictError
from tests.support.threads import run_concurrently


@pytest.fixture
def db(database_url: str) -> Iterator[OffersStore]:
    opened = open_store(database_url, pool_size=20)
    yield opened
    opened.close()


def _event(event_id: str, **kw) -> dict:
    return {"event_id": event_id, "member_id": "m1", "offer_id": "o1", "event": "viewed", **kw}


def _kinds(db: OffersStore) -> dict[str, str]:
    with db.engine.connect() as connection:
        return dict(connection.execute(text("SELECT event_id, event FROM feedback_events")).all())


def test_other_contents_under_a_stored_id_conflict_and_nothing_is_stored(db: OffersStore):
    db.record_events([_event("e1")])
    with pytest.raises(EventConflictError) as caught:
        db.record_events([_event("e2"), _event("e1", event="redeemed", channel="app")])
    [conflict] = caught.value.conflicts
    assert (conflict.index, conflict.event_id) == (1, "e1")
    assert conflict.fields == ("event", "channel")
    assert _kinds(db) == {"e1": "viewed"}  # e2 rolled back with the conflict
    replay = db.record_events([_event("e1"), _event("e2")])
    assert replay.stored == ["e2"] and replay.duplicates == ["e1"]


def test_client_time_is_compared_only_when_both_carry_one(db: OffersStore):
    ts = datetime(2026, 11, 30, 12, 0, 0, 123456)
    db.record_events([_event("t", ts=ts), _event("u")])
    assert db.record_events([_event("t"), _event("u")]).duplicates == ["t", "u"]
    assert db.record_events([_event("t", ts=ts)]).duplicates == ["t"]
    with pytest.raises(EventConflictError, match="ts"):
        db.record_events([_event("t", ts=datetime(2026, 11, 30, 12, 0, 1))])


def test_concurrent_different_contents_keep_exactly_one(db: OffersStore):
    def send(i: int):
        try:
            return db.record_events([_event("same", offer_id=f"o{i % 2}")])
        except EventConflictError:
            return "conflict"

    results = run_concurrently(20, send)
    stored = [r for r in results if r != "conflict" and r.stored]
    assert len(stored) == 1
    kept = _kinds(db)
    assert kept == {"same": "viewed"}
    with db.engine.connect() as connection:
        offer = connection.execute(text("SELECT offer_id FROM feedback_events")).scalar()
    # every call with the other offer id conflicted; every call with the same one was a replay
    assert results.count("conflict") == sum(1 for i in range(20) if f"o{i % 2}" != offer)


def test_write_lock_held_elsewhere_fails_within_the_lock_wait(tmp_path: Path):
    """Events, the readiness probe and budget reservations all fail fast (then 503)."""
    path = tmp_path / "offers.db"
    fast = open_store(f"sqlite:///{path}", lock_wait_seconds=0.2)
    fast.set_budget("o1", 10.0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            fast.record_events([_event("e1")])
        with pytest.raises(OperationalError, match="locked"):
            fast.check_writable()
        with pytest.raises(OperationalError, match="locked"):
            fast.reserve_budget("o1", 1.0)  # the checkout path shares the engine
        assert time.monotonic() - start < 5  # not the 30 s of the batch default
        fast.ping()  # reads still work in WAL mode
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert fast.record_events([_event("e1")]).stored == ["e1"]
    fast.check_writable()
    assert fast.count_events() == 1  # the readiness probe leaves nothing behind
    fast.close()
