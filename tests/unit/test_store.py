"""Serving store contract, run against SQLite (WAL) and a real PostgreSQL server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError

from serving.store import (
    CapKey,
    DecisionLogWriter,
    OffersStore,
    StoreConfigError,
    UnknownBudgetError,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    migrate,
    open_store,
)
from serving.store import ReservationItem as Item
from serving.store.tables import budgets, member_caps
from tests.support.threads import run_concurrently


def _event(event_id: str, member: str = "m1", event: str = "viewed") -> dict:
    return {"event_id": event_id, "member_id": member, "offer_id": "o1", "event": event}


def test_migrations_apply_to_an_empty_database(database_url: str):
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert {"decisions", "feedback_events", "budgets", "member_caps"} <= tables
        migrate(engine)  # a second run is a no-op
        assert current_revision(engine) == head_revision()
        downgrade(engine)
        assert "feedback_events" not in set(inspect(engine).get_table_names())
        migrate(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_sqlite_store_runs_in_wal_mode(tmp_path: Path):
    opened = open_store(f"sqlite:///{tmp_path / 'wal.db'}")
    with opened.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    opened.close()


def test_unsupported_database_url_is_named():
    with pytest.raises(StoreConfigError, match="mysql"):
        make_engine("mysql://localhost/offers")
    with pytest.raises(StoreConfigError, match="in-memory"):
        make_engine("sqlite://")


def test_same_event_id_twice_is_stored_once(store: OffersStore):
    first = store.record_events([_event("e1"), _event("e2")])
    assert first.stored == ["e1", "e2"] and first.duplicates == []
    again = store.record_events([_event("e1"), _event("e3")])  # an identical replay of e1
    assert again.stored == ["e3"] and again.duplicates == ["e1"]
    within = store.record_events([_event("e4"), _event("e4")])
    assert within.stored == ["e4"] and within.duplicates == ["e4"]
    assert store.count_events() == 4
    with store.engine.connect() as connection:
        kept = connection.execute(
            text("SELECT event FROM feedback_events WHERE event_id = 'e1'")
        ).scalar()
    assert kept == "viewed"  # the first write wins


def test_concurrent_duplicates_store_one_event(store: OffersStore):
    results = run_concurrently(20, lambda i: store.record_events([_event("same")]))
    assert sum(len(r.stored) for r in results) == 1
    assert sum(len(r.duplicates) for r in results) == 19
    assert store.event_ids() == {"same"}


def test_budget_is_never_overspent_under_concurrency(store: OffersStore):
    store.set_budget("o1", 50.0, unit="count")
    granted = run_concurrently(200, lambda i: store.reserve_budget("o1", 1.0))
    assert sum(granted) == 50
    assert store.budget("o1")["spent"] == pytest.approx(50.0)


def test_budget_with_fractional_amounts_and_release(store: OffersStore):
    store.set_budget("o2", 0.3)
    assert store.reserve_budget("o2", 0.1)
    assert store.reserve_budget("o2", 0.2)  # 0.1 + 0.2 > 0.3 in floating point
    assert not store.reserve_budget("o2", 0.1)
    store.release_budget("o2", 0.2)
    assert store.reserve_budget("o2", 0.15)
    store.set_budget("o2", 1.0)  # raising the budget keeps what was spent
    assert store.budget("o2")["spent"] == pytest.approx(0.25)


def test_budget_errors_name_the_offer(store: OffersStore):
    with pytest.raises(UnknownBudgetError, match="'nope'"):
        store.reserve_budget("nope", 1.0)
    store.set_budget("o3", 5.0)
    with pytest.raises(ValueError, match="o3"):
        store.reserve_budget("o3", 0.0)
    with pytest.raises(ValueError, match="o3"):
        store.set_budget("o3", -1.0)


def test_member_cap_holds_under_concurrency(store: OffersStore):
    granted = run_concurrently(40, lambda i: store.reserve_member_cap("m1", "surprise", "2026", 3))
    assert sum(granted) == 3
    assert store.cap_usage("m1", "2026") == {"surprise": 3}
    assert store.reserve_member_cap("m1", "surprise", "2027", 3)  # a new period starts at 0
    assert not store.reserve_member_cap("m2", "o1", "2026", 0)


def test_decision_log_bulk_insert_round_trips(store: OffersStore):
    records = [
        {
            "decision_id": f"d{i}",
            "member_id": f"m{i % 7}",
            "channel": "app",
            "offers": [{"offer_id": "o1", "rank": 1, "score": 0.4, "propensity": 0.9}],
            "model_versions": {"offers-affinity": "3", "offers-uplift": "2"},
            "fallback": "personalised",
            "created_at": datetime(2026, 11, 1, 12, 0, 0),
        }
        for i in range(300)
    ]
    assert store.log_decisions(records) == 300
    assert store.log_decisions(records[:10]) == 0  # replayed decisions are skipped
    got = store.get_decision("d17")
    assert got["member_id"] == "m3"
    assert got["offers"][0]["propensity"] == pytest.approx(0.9)
    assert got["model_versions"] == {"offers-affinity": "3", "offers-uplift": "2"}
    assert got["created_at"] == datetime(2026, 11, 1, 12, 0, 0)


def test_decision_log_writer_flushes_everything_on_close(store: OffersStore):
    writer = DecisionLogWriter(store, flush_seconds=0.05, max_batch=64)
    for i in range(500):
        writer.submit(
            {
                "decision_id": f"w{i}",
                "member_id": "m1",
                "channel": "email",
                "offers": [],
                "model_versions": {},
                "fallback": "global_popular",
            }
        )
    writer.close()
    assert writer.written == 500 and writer.dropped == 0
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM decisions")).scalar() == 500


def test_reserve_grants_one_group_never_overspends(store: OffersStore):
    store.set_budget("o1", 50.0, unit="count")
    outcomes = store.reserve_grants([[Item("o1", amount=1.0)] for _ in range(200)])
    assert sum(o.granted == [0] for o in outcomes) == 50
    assert sum(o.exhausted == ["o1"] for o in outcomes) == 150
    assert store.budget("o1")["spent"] == pytest.approx(50.0)


def test_reserve_grants_concurrent_groups_never_overspend(store: OffersStore):
    store.set_budget("o1", 50.0, unit="count")
    outcomes = run_concurrently(
        8, lambda i: store.reserve_grants([[Item("o1", amount=1.0)] for _ in range(25)])
    )
    assert sum(len(o.granted) for group in outcomes for o in group) == 50
    assert store.budget("o1")["spent"] == pytest.approx(50.0)


def test_reserve_grants_counts_the_cap_before_the_budget(store: OffersStore):
    store.set_budget("money", 10.0, unit="money")
    store.set_budget("spent", 0.0, unit="count")
    cap = CapKey("m1", "surprise", "2026", 2)
    request = [
        Item("free"),  # nothing to reserve: granted
        Item("money", cap=cap, amount=4.0),
        Item("money", cap=cap, amount=4.0),
        Item("money", cap=cap, amount=4.0),  # the cap is used up: skipped, budget untouched
        Item("spent", amount=1.0),  # budget 0: exhausted
    ]
    (outcome,) = store.reserve_grants([request])
    assert outcome.granted == [0, 1, 2] and outcome.exhausted == ["spent"]
    assert outcome.error is None
    assert store.budget("money")["spent"] == pytest.approx(8.0)
    assert store.cap_usage("m1", "2026") == {"surprise": 2}
    (again,) = store.reserve_grants([[Item("money", amount=4.0)]])
    assert again.granted == [] and again.exhausted == ["money"]  # 8 + 4 > 10
    with store.engine.connect() as connection:  # timestamps read back as datetimes
        stamps = connection.execute(
            select(budgets.c.updated_at).union_all(select(member_caps.c.updated_at))
        ).scalars()
        assert all(isinstance(t, datetime) and t.year >= 2026 for t in stamps)


def test_reserve_grants_unknown_budget_fails_only_its_request(store: OffersStore):
    store.set_budget("o1", 5.0, unit="count")
    first, second, third = store.reserve_grants(
        [
            [Item("o1", amount=1.0)],
            [Item("o1", amount=1.0), Item("nope", amount=1.0), Item("o1", amount=1.0)],
            [Item("o1", amount=1.0)],
        ]
    )
    assert first.granted == [0] and third.granted == [0]
    assert isinstance(second.error, UnknownBudgetError) and "'nope'" in str(second.error)
    assert second.granted == [0]  # what came before the unknown offer stays reserved
    assert store.budget("o1")["spent"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="surprise"):
        Item("o1", cap=CapKey("m1", "surprise", "2026", -1))


def test_reserve_grants_retries_a_deadlock_and_raises_other_errors(store, monkeypatch):
    import serving.store.reserve as reserve

    store.set_budget("o1", 5.0, unit="count")
    name = "_run_group_pg" if store.dialect == "postgresql" else "_run_group"
    real = getattr(reserve, name)
    calls: list[int] = []

    class _Deadlock(Exception):
        sqlstate = "40P01"

    def flaky(*args, **kwargs):
        calls.append(1)
        outcomes = real(*args, **kwargs)  # the updates run, then the "deadlock" aborts them
        if len(calls) == 1:
            raise OperationalError("UPDATE budgets ...", {}, _Deadlock())
        return outcomes

    monkeypatch.setattr(reserve, name, flaky)
    (outcome,) = store.reserve_grants([[Item("o1", amount=1.0)]])
    assert outcome.granted == [0] and len(calls) == 2
    assert store.budget("o1")["spent"] == pytest.approx(1.0)  # once: the first try rolled back

    def broken(*args, **kwargs):
        raise OperationalError("UPDATE budgets ...", {}, RuntimeError("disk I/O error"))

    monkeypatch.setattr(reserve, name, broken)
    with pytest.raises(OperationalError):
        store.reserve_grants([[Item("o1", amount=1.0)]])


def test_reserve_grants_fractional_amounts_match_reserve_budget(store: OffersStore):
    store.set_budget("o2", 0.3, unit="money")
    outcomes = store.reserve_grants(
        [[Item("o2", amount=0.1)], [Item("o2", amount=0.2)], [Item("o2", amount=0.1)]]
    )
    assert [o.granted for o in outcomes] == [[0], [0], []]  # 0.1 + 0.2 > 0.3 in floating point
    assert outcomes[2].exhausted == ["o2"]
    assert store.budget("o2")["spent"] == pytest.approx(0.3)
    assert not store.reserve_budget("o2", 0.01)  # both paths see the same spend
