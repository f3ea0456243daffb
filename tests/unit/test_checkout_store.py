"""Checkout sessions in the store: the session, its grants and every cap and budget count in
one group commit; retries, state changes, releases and the sweep (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from datetime import datetime, timedelta

import numpy as np
import pytest

from serving.api.grants import GrantService
from serving.engine.state import PastGrant
from serving.store import (
    CapKey,
    GrantRequest,
    IllegalTransition,
    OffersStore,
    ReservationItem,
    SessionRecord,
    UnknownOffers,
    UnknownSession,
    open_store,
    utcnow,
)


def _item(member: str, offer: str, *, cap: int | None = None, amount: float | None = 1.0,
          freq: int | None = None, surprise_cap: int | None = None) -> ReservationItem:  # fmt: skip
    caps = []
    if cap is not None:
        caps.append(CapKey(member, f"offer:{offer}", "all", cap))
    if freq is not None:
        caps.append(CapKey(member, "channel:checkout", "7d-1", freq))
    yearly = CapKey(member, "surprise", "2026", surprise_cap) if surprise_cap is not None else None
    return ReservationItem(offer, cap=yearly, amount=amount, caps=tuple(caps))


def _request(tid: str, member: str, items: list[ReservationItem], until=None) -> GrantRequest:
    rewards = [{"offer_id": i.offer_id, "cost": 1.0} for i in items]
    response = {"transaction_id": tid, "decision_id": f"d-{tid}", "member_id": member,
                "rewards": rewards}  # fmt: skip
    session = SessionRecord(
        transaction_id=tid,
        member_id=member,
        decision_id=f"d-{tid}",
        channel="checkout",
        response=response,
        valid_until=tuple(until for _ in items),
        surprise=tuple(i.cap is not None for i in items),
        client_ts=datetime(2020, 1, 1),
    )
    return GrantRequest(tuple(items), session)


def _counts(store: OffersStore, member: str) -> tuple[dict, dict, dict]:
    """Budget spend per offer and the member's non-zero cap counts (a counter created at 0 by
    a grant and back at 0 after its release is the same count)."""
    spent = {o: b["spent"] for o, b in store.budgets().items()}
    caps = [store.cap_usage(member, p) for p in ("all", "7d-1")]
    return spent, *({k: n for k, n in c.items() if n} for c in caps)


def test_session_grants_and_caps_commit_together_and_a_retry_reserves_nothing(store):
    store.set_budget("a", 10.0, unit="count")
    store.set_budget("b", 10.0, unit="count")
    req = _request("t1", "m1", [_item("m1", "a", cap=1), _item("m1", "b", cap=3)])
    (first,) = store.reserve_grants([req])
    assert first.granted == [0, 1] and not first.duplicate
    assert first.response["rewards"] == req.session.response["rewards"]
    assert first.response["dropped"] == []
    before = _counts(store, "m1")
    again, other = store.reserve_grants([req, _request("t1", "m1", [_item("m1", "b")])])
    assert again.duplicate and other.duplicate and again.granted == []
    assert _counts(store, "m1") == before  # nothing new reserved
    row = store.get_session("t1")
    assert (row["state"], row["member_id"], row["decision_id"]) == ("open", "m1", "d-t1")
    assert row["response"]["rewards"] == first.response["rewards"]
    assert row["client_ts"] == datetime(2020, 1, 1)  # recorded
    assert [g.offer_id for g in store.member_grants("m1")] == ["a", "b"]
    assert store.grant_counts() == {"a": {"granted": 1}, "b": {"granted": 1}}


def test_caps_drop_rewards_with_their_reason_and_give_back_partial_counts(store):
    store.set_budget("a", 10.0, unit="count")
    store.set_budget("empty", 0.0, unit="count")
    out = store.reserve_grants(
        [
            _request("t1", "m1", [_item("m1", "a", cap=1, freq=2)]),
            _request("t2", "m1", [_item("m1", "a", cap=1, freq=2)]),  # lifetime cap 1
            _request("t3", "m1", [_item("m1", "empty", freq=2)]),  # budget 0
            _request("t4", "m1", [_item("m1", "b", amount=None, freq=2)]),  # 2nd of freq 2
            _request("t5", "m1", [_item("m1", "c", amount=None, freq=2)]),  # freq cap
            _request("t6", "m1", [_item("m1", "s", amount=None, surprise_cap=0)]),
        ]
    )
    assert [o.granted for o in out] == [[0], [], [], [0], [], []]
    assert [o.dropped for o in out] == [
        [], [(0, "per_member_cap")], [(0, "budget")], [], [(0, "frequency_cap")],
        [(0, "surprise_cap")],
    ]  # fmt: skip
    assert out[1].response["dropped"] == [{"offer_id": "a", "reason": "per_member_cap"}]
    # a dropped item gives back the caps it counted before failing another one
    assert store.cap_usage("m1", "7d-1") == {"channel:checkout": 2}
    assert store.cap_usage("m1", "all") == {"offer:a": 1}
    assert store.budget("a")["spent"] == 1.0 and store.budget("empty")["spent"] == 0.0


def test_cancel_restores_budget_and_cap_counts_exactly(store):
    store.set_budget("a", 10.0, unit="count")
    store.set_budget("m", 50.0, unit="money")
    store.reserve_grants([_request("t0", "m1", [_item("m1", "a", cap=5, freq=9)])])
    before = _counts(store, "m1")
    items = [_item("m1", "a", cap=5, freq=9), _item("m1", "m", amount=2.5, cap=2, freq=9)]
    (out,) = store.reserve_grants([_request("t1", "m1", items)])
    assert out.granted == [0, 1]
    assert _counts(store, "m1") != before
    change = store.cancel_session("t1")
    assert (change.state, sorted(change.released)) == ("cancelled", ["a", "m"])
    assert _counts(store, "m1") == before
    assert [g.offer_id for g in store.member_grants("m1")] == ["a"]  # t0's grant only
    again = store.cancel_session("t1")  # idempotent
    assert (again.state, again.released) == ("cancelled", [])
    assert _counts(store, "m1") == before


def test_each_transition_and_each_illegal_one(store):
    store.set_budget("a", 10.0, unit="count")
    store.set_budget("b", 10.0, unit="count")
    store.reserve_grants([_request("t1", "m1", [_item("m1", "a"), _item("m1", "b")])])
    with pytest.raises(IllegalTransition, match="is open"):
        store.cancel_session("t1", ["a"])  # a return needs a closed session
    assert store.close_session("t1").state == "closed"
    assert store.close_session("t1").state == "closed"  # idempotent
    with pytest.raises(UnknownOffers, match="'zz'"):
        store.cancel_session("t1", ["zz"])
    partial = store.cancel_session("t1", ["a"])
    assert (partial.state, partial.released) == ("partially_returned", ["a"])
    assert store.cancel_session("t1", ["a"]).released == []  # the same return again
    with pytest.raises(IllegalTransition, match="is partially_returned: cannot close"):
        store.close_session("t1")
    last = store.cancel_session("t1", ["b"])
    assert (last.state, last.released) == ("cancelled", ["b"])  # nothing left: cancelled
    with pytest.raises(IllegalTransition, match="is cancelled: cannot close"):
        store.close_session("t1")
    assert store.budget("a")["spent"] == 0.0 and store.budget("b")["spent"] == 0.0
    store.reserve_grants([_request("t2", "m1", [_item("m1", "a")])])
    assert store.cancel_session("t2").state == "cancelled"  # open -> cancelled
    with pytest.raises(UnknownSession):
        store.close_session("nope")
    with pytest.raises(UnknownSession):
        store.cancel_session("nope")


def test_a_redeemed_reward_stays_counted_through_a_cancel(store):
    store.set_budget("a", 10.0, unit="count")
    store.set_budget("b", 10.0, unit="count")
    store.reserve_grants([_request("t1", "m1", [_item("m1", "a", cap=1), _item("m1", "b")])])
    assert store.mark_redeemed([("m1", "a", "d-t1"), ("m1", "a", "d-t1")]) == [("t1", "a")]
    assert store.mark_redeemed([("m1", "b", "other-decision")]) == []
    change = store.cancel_session("t1")
    assert (change.released, change.kept_redeemed) == (["b"], ["a"])
    assert store.budget("a")["spent"] == 1.0 and store.budget("b")["spent"] == 0.0
    assert store.cap_usage("m1", "all") == {"offer:a": 1}
    (g,) = store.member_grants("m1")
    assert isinstance(g, PastGrant) and (g.offer_id, g.redeemed) == ("a", True)


def test_sweep_releases_expired_grants_and_abandoned_open_sessions(store):
    store.set_budget("a", 10.0, unit="count")
    now = utcnow()
    store.reserve_grants(
        [
            _request("expired", "m1", [_item("m1", "a", cap=9)], until=now - timedelta(1)),
            _request("valid", "m2", [_item("m2", "a", cap=9)], until=now + timedelta(1)),
            _request("open", "m3", [_item("m3", "a", cap=9)]),
            _request("closed", "m4", [_item("m4", "a", cap=9)]),
        ]
    )
    store.close_session("expired")
    store.close_session("valid")
    store.close_session("closed")
    assert store.budget("a")["spent"] == 4.0
    result = store.sweep_sessions(open_seconds=3600)  # nothing open that long
    assert (result.expired_grants, result.abandoned_sessions) == (1, 0)
    # the expired reward's budget is back; the member received it: its cap stays counted
    assert store.budget("a")["spent"] == 3.0 and store.cap_usage("m1", "all") == {"offer:a": 1}
    assert [(g.offer_id, g.redeemed) for g in store.member_grants("m1")] == [("a", False)]
    assert store.cap_usage("m3", "all") == {"offer:a": 1}
    result = store.sweep_sessions(open_seconds=0, now=utcnow() + timedelta(seconds=1))
    assert (result.expired_grants, result.abandoned_sessions, result.released_grants) == (0, 1, 1)
    assert result.members == {"m3"}
    assert store.get_session("open")["state"] == "cancelled"
    assert store.get_session("closed")["state"] == "closed"
    assert store.budget("a")["spent"] == 2.0
    assert store.cap_usage("m3", "all") == {"offer:a": 0}  # never confirmed: all given back
    assert store.member_grants("m3") == []
    again = store.sweep_sessions(open_seconds=0, now=utcnow() + timedelta(seconds=1))
    assert (again.expired_grants, again.abandoned_sessions) == (0, 0)
    counts = store.grant_counts()["a"]
    assert counts == {"granted": 2, "released": 1, "expired": 1}


def _stale_and_expired(store: OffersStore, n_stale: int, n_expired: int, n_kept: int) -> None:
    """``n_stale`` open sessions (two rewards: a counted one with a cap, a money one with a
    frequency cap), ``n_expired`` closed sessions whose reward lapsed, ``n_kept`` closed valid."""
    store.set_budget("a", 1000.0, unit="count")
    store.set_budget("m", 1000.0, unit="money")
    now = utcnow()
    requests = [
        _request(f"s{i:03d}", f"ms{i}",
                 [_item(f"ms{i}", "a", cap=9), _item(f"ms{i}", "m", amount=2.5, freq=9)])
        for i in range(n_stale)
    ]  # fmt: skip
    requests += [
        _request(f"e{i:03d}", f"me{i}", [_item(f"me{i}", "a", cap=9)], until=now - timedelta(1))
        for i in range(n_expired)
    ]
    requests += [_request(f"k{i:03d}", f"mk{i}", [_item(f"mk{i}", "a", cap=9)])
                 for i in range(n_kept)]  # fmt: skip
    store.reserve_grants(requests)
    for tid in [f"e{i:03d}" for i in range(n_expired)] + [f"k{i:03d}" for i in range(n_kept)]:
        store.close_session(tid)


def _commits(store: OffersStore) -> list[int]:
    """A counter of the store engine's commits (one per write transaction)."""
    from sqlalchemy import event

    seen = [0]

    def count(_connection) -> None:
        seen[0] += 1

    event.listen(store.engine, "commit", count)
    return seen


def _transactions(n: int, batch: int) -> int:
    """Batches of ``n`` rows, plus the one that finds nothing left after a full last batch."""
    return -(-n // batch) + (n % batch == 0)


@pytest.mark.parametrize("batch", [1, 5, 200])
def test_a_batched_sweep_gives_the_known_answer_in_few_transactions(store, batch):
    n_stale, n_expired, n_kept = 23, 7, 4
    _stale_and_expired(store, n_stale, n_expired, n_kept)
    assert store.budget("a")["spent"] == n_stale + n_expired + n_kept
    assert store.budget("m")["spent"] == 2.5 * n_stale
    for i in (0, n_stale - 1):
        assert store.cap_usage(f"ms{i}", "all") == {"offer:a": 1}
        assert store.cap_usage(f"ms{i}", "7d-1") == {"channel:checkout": 1}
    commits = _commits(store)
    later = utcnow() + timedelta(seconds=1)
    result = store.sweep_sessions(0, now=later, batch=batch, pause=0)
    assert (result.expired_grants, result.abandoned_sessions, result.released_grants) == (
        n_expired, n_stale, 2 * n_stale
    )  # fmt: skip
    assert result.members == {f"ms{i}" for i in range(n_stale)} | {
        f"me{i}" for i in range(n_expired)
    }
    assert commits[0] == _transactions(n_expired, batch) + _transactions(n_stale, batch)
    # exactly: abandoned and expired give their budget back, kept grants stay
    assert store.budget("a")["spent"] == n_kept
    assert store.budget("m")["spent"] == 0.0
    for i in range(n_stale):  # abandoned: every cap count back
        assert store.cap_usage(f"ms{i}", "all") == {"offer:a": 0}
        assert store.cap_usage(f"ms{i}", "7d-1") == {"channel:checkout": 0}
    for i in range(n_expired):  # expired: the member received it, the cap stays counted
        assert store.cap_usage(f"me{i}", "all") == {"offer:a": 1}
    assert store.cap_usage("mk0", "all") == {"offer:a": 1}
    assert {store.get_session(f"s{i:03d}")["state"] for i in range(n_stale)} == {"cancelled"}
    assert {store.get_session(f"k{i:03d}")["state"] for i in range(n_kept)} == {"closed"}
    assert store.grant_counts() == {
        "a": {"released": n_stale, "expired": n_expired, "granted": n_kept},
        "m": {"released": n_stale},
    }
    again = store.sweep_sessions(0, now=later, batch=batch, pause=0)
    assert (again.expired_grants, again.abandoned_sessions, again.members) == (0, 0, set())
    assert store.budget("a")["spent"] == n_kept


def test_the_sweep_keeps_its_limit_per_call_across_batches(store):
    _stale_and_expired(store, 9, 7, 0)
    later = utcnow() + timedelta(seconds=1)
    first = store.sweep_sessions(0, now=later, limit=4, batch=3, pause=0)
    assert (first.expired_grants, first.abandoned_sessions) == (4, 4)
    rest = store.sweep_sessions(0, now=later, limit=100, batch=3, pause=0)
    assert (rest.expired_grants, rest.abandoned_sessions) == (3, 5)
    assert store.budget("a")["spent"] == 0.0 and store.budget("m")["spent"] == 0.0


def test_the_sweep_leaves_sessions_newer_than_the_limit_and_valid_grants(store):
    _stale_and_expired(store, 3, 0, 2)
    result = store.sweep_sessions(3600, batch=2, pause=0)  # nothing open for an hour
    assert (result.expired_grants, result.abandoned_sessions) == (0, 0)
    assert store.get_session("s000")["state"] == "open"
    assert store.budget("a")["spent"] == 5.0


def test_two_concurrent_batched_sweeps_release_nothing_twice(store):
    n_stale, n_expired, n_kept = 40, 12, 5
    _stale_and_expired(store, n_stale, n_expired, n_kept)
    later = utcnow() + timedelta(seconds=1)
    results: list = [None, None]
    errors: list = []
    barrier = threading.Barrier(2, timeout=60)

    def sweeper(r: int) -> None:
        barrier.wait()
        try:
            results[r] = store.sweep_sessions(0, now=later, batch=3, pause=0)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweeper, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and all(r is not None for r in results), errors
    # a sweep may stop early where the other holds rows (PostgreSQL skips them); a third sweep
    # finishes, and the three together released each grant exactly once
    last = store.sweep_sessions(0, now=later, batch=3, pause=0)
    total = [*results, last]
    assert sum(r.abandoned_sessions for r in total) == n_stale
    assert sum(r.released_grants for r in total) == 2 * n_stale
    assert sum(r.expired_grants for r in total) == n_expired
    assert store.budget("a")["spent"] == n_kept  # a double release would take these back too
    assert store.budget("m")["spent"] == 0.0
    assert store.cap_usage("me0", "all") == {"offer:a": 1}
    assert store.cap_usage("mk0", "all") == {"offer:a": 1}
    assert store.grant_counts() == {
        "a": {"released": n_stale, "expired": n_expired, "granted": n_kept},
        "m": {"released": n_stale},
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch", 0), ("batch", -5), ("batch", 1001), ("batch", 2.5), ("batch", True),
     ("limit", 0), ("limit", "10"), ("pause", -1), ("pause", 1.5), ("pause", "0.1")],
)  # fmt: skip
def test_a_bad_batch_limit_or_pause_is_refused_naming_it(store, field, value):
    with pytest.raises(ValueError, match=f"^{field}: {re.escape(repr(value))} "):
        store.sweep_sessions(0, **{field: value})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OFFERS_CHECKOUT_SWEEP_BATCH", "0"), ("OFFERS_CHECKOUT_SWEEP_BATCH", "1001"),
     ("OFFERS_CHECKOUT_SWEEP_BATCH", "many"), ("OFFERS_CHECKOUT_SWEEP_PAUSE_SECONDS", "-0.1"),
     ("OFFERS_CHECKOUT_SWEEP_PAUSE_SECONDS", "2")],
)  # fmt: skip
def test_bad_sweep_settings_are_refused_naming_the_setting_and_value(monkeypatch, variable, value):
    from pydantic import ValidationError

    from serving.settings import ServingSettings

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as info:
        ServingSettings()
    text = str(info.value)
    assert variable.removeprefix("OFFERS_").lower() in text and repr(value) in text


def test_offers_sessions_sweep_refuses_a_bad_batch_naming_it(tmp_path):
    import typer
    from typer.testing import CliRunner

    from offers import cmd_sessions

    app = typer.Typer()
    cmd_sessions.register(app)
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    args = ["sessions", "sweep", "--store", url, "--batch"]
    out = CliRunner().invoke(app, [*args, "5000"], terminal_width=200)
    assert out.exit_code == 2, out.output
    assert "batch: 5000 is not an integer in [1, 1000]" in out.output
    ok = CliRunner().invoke(app, [*args, "2"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output.strip().splitlines()[-1])["abandoned_sessions_cancelled"] == 0


def _grant_scenario(store: OffersStore, rng: random.Random) -> list:
    """Grants of a few members and offers in every state, budgets near zero and caps at zero
    (the floors), amounts that are not binary fractions; returns every grant row, shuffled."""
    from sqlalchemy import select, update

    from serving.store.tables import budgets, grants, member_caps

    for o, budget in (("a", 100.0), ("b", 7.3), ("c", 1e6)):
        store.set_budget(o, budget, unit="money")
    requests = []
    for t in range(40):
        m = f"m{rng.randrange(6)}"
        offers = rng.sample(["a", "b", "c", "n"], rng.randrange(1, 4))
        items = [
            _item(m, o, cap=rng.choice([None, 50]), freq=rng.choice([None, 50]),
                  amount=None if o == "n" else rng.choice([0.1, 0.2, 0.3, 1.7, 0.0]))
            for o in offers
        ]  # fmt: skip
        requests.append(_request(f"t{t:02d}", m, items))
    store.reserve_grants(requests)
    with store.engine.begin() as c:
        order = (grants.c.transaction_id, grants.c.offer_id)  # the same on both copies
        keys = c.execute(select(*order).order_by(*order)).all()
        for tid, offer in keys:  # some redeemed or already released: left alone by a release
            state = rng.choice(["granted", "granted", "granted", "redeemed", "released"])
            c.execute(
                update(grants)
                .where(grants.c.transaction_id == tid, grants.c.offer_id == offer)
                .values(state=state)
            )
        # counters moved elsewhere meanwhile: a budget below what its grants reserved (the
        # floor at 0 applies) and caps at 0 (a release leaves them at 0)
        c.execute(update(budgets).where(budgets.c.offer_id == "b").values(spent=0.25))
        c.execute(update(member_caps).where(member_caps.c.member_id == "m0").values(used=0))
        rows = c.execute(select(grants).order_by(*order)).all()
    rng.shuffle(rows)
    return rows


def _dump(store: OffersStore) -> tuple:
    from sqlalchemy import select

    from serving.store.tables import budgets, grants, member_caps

    with store.engine.connect() as c:
        return (
            sorted(c.execute(select(budgets.c.offer_id, budgets.c.spent)).all()),
            sorted(c.execute(select(member_caps.c.member_id, member_caps.c.cap_key,
                                    member_caps.c.period, member_caps.c.used)).all()),
            sorted(c.execute(select(grants.c.transaction_id, grants.c.offer_id,
                                    grants.c.state)).all()),
        )  # fmt: skip


def _model_release(before: tuple, rows: list, expired: bool) -> tuple[list[str], tuple]:
    """The release rule in plain Python, row by row: a row still granted changes state, gives
    back max(spent - amount, 0) on its offer's budget and, unless expired, one use of each cap
    it counted while the count is above 0."""
    spent, used = dict(before[0]), {(m, k, p): u for m, k, p, u in before[1]}
    state = {(t, o): st for t, o, st in before[2]}
    released = []
    for g in rows:
        if state[(g.transaction_id, g.offer_id)] != "granted":
            continue
        state[(g.transaction_id, g.offer_id)] = "expired" if expired else "released"
        if g.amount is not None and g.amount > 0:
            spent[g.offer_id] = max(spent[g.offer_id] - float(g.amount), 0.0)
        for cap_key, period in [] if expired else g.caps or []:
            key = (g.member_id, cap_key, period)
            used[key] = used[key] - 1 if used[key] > 0 else used[key]
        released.append(g.offer_id)
    return sorted(released), (
        sorted(spent.items()),
        sorted((*key, u) for key, u in used.items()),
        sorted((t, o, st) for (t, o), st in state.items()),
    )


@pytest.mark.parametrize("expired", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_release_ends_where_the_row_by_row_rule_says(database_url, expired, seed):
    """``_release`` (cancel, return and the sweep: one ``UPDATE ... RETURNING`` per chunk, the
    give-backs grouped by counter) against the rule applied row by row in Python: the same
    grants change state, and the same budgets and cap counts result, floors included."""
    from serving.store.sessions import _release

    store = open_store(database_url)
    try:
        rows = _grant_scenario(store, random.Random(seed))
        before = _dump(store)
        with store.engine.begin() as c:
            out = _release(c, rows, utcnow(), expired=expired)
        after = _dump(store)
    finally:
        store.close()
    want_released, want = _model_release(before, rows, expired)
    assert want_released and sorted(g.offer_id for g in out) == want_released
    assert after[1:] == want[1:]
    assert [o for o, _ in after[0]] == [o for o, _ in want[0]]
    np.testing.assert_allclose([v for _, v in after[0]], [v for _, v in want[0]], atol=1e-9)
    assert before != after


def _offer(offer_id: str) -> dict:
    return {"offer_id": offer_id, "surprise": False}


def test_100_concurrent_checkouts_of_one_member_for_a_cap_1_offer_grant_exactly_1(store):
    store.set_budget("a", 1000.0, unit="count")
    service = GrantService(store)

    async def main() -> list:
        return await asyncio.gather(
            *(service.reserve(_request(f"t{i}", "m1", [_item("m1", "a", cap=1)]))
              for i in range(100))
        )  # fmt: skip

    try:
        outcomes = asyncio.run(main())
    finally:
        service.close()
    assert sum(len(o.granted) for o in outcomes) == 1
    assert sum(o.dropped == [(0, "per_member_cap")] for o in outcomes) == 99
    assert store.budget("a")["spent"] == 1.0
    assert store.grant_counts() == {"a": {"granted": 1}}


def test_two_replicas_grant_a_cap_1_offer_once_and_dedupe_shared_transactions(database_url):
    store = open_store(database_url)
    store.set_budget("a", 1000.0, unit="count")
    results: list = [None, None]
    barrier = threading.Barrier(2, timeout=60)

    def replica(r: int) -> None:
        own = open_store(database_url, migrate_schema=False, pool_size=5)
        service = GrantService(own)

        async def main() -> list:
            barrier.wait()
            calls = []
            for i in range(100):  # t0..t49 are sent by both replicas (a till's retry)
                tid = f"t{i}" if i < 50 else f"r{r}-{i}"
                calls.append(service.reserve(_request(tid, "m1", [_item("m1", "a", cap=1)])))
                calls.append(service.reserve(_request(f"x{r}-{i}", f"n{i}", [_item(f"n{i}", "a")])))
            return await asyncio.gather(*calls)

        try:
            results[r] = asyncio.run(main())
        finally:
            service.close()
            own.close()

    threads = [threading.Thread(target=replica, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert all(r is not None for r in results), "a replica failed (see the log)"
    outcomes = [o for r in results for o in r]
    capped = [o for o in outcomes if o.response is None or o.response["member_id"] == "m1"]
    assert sum(len(o.granted) for o in capped) == 1
    assert sum(o.duplicate for o in outcomes) == 50  # each shared id stored once
    assert store.budget("a")["spent"] == 1.0 + 200  # m1 once, n0..n99 on both replicas
    store.close()


def test_live_grants_are_every_members_grants_in_one_read(store):
    """``live_grants`` (the member history's refresh) gives what ``member_grants`` gives
    member by member: released grants left out, redemptions marked; None above its limit."""
    store.set_budget("a", 10.0, unit="count")
    store.reserve_grants(
        [
            _request("t1", "m1", [_item("m1", "a", cap=5), _item("m1", "b", amount=None)]),
            _request("t2", "m2", [_item("m2", "a", cap=5)]),
            _request("t3", "m1", [_item("m1", "c", amount=None)]),
            _request("t4", "m3", [_item("m3", "a", cap=5)]),
        ]
    )
    store.cancel_session("t4")  # m3's only grant released
    store.mark_redeemed([("m2", "a", "d-t2")])
    live = store.live_grants(100)
    grouped: dict[str, list] = {}
    for member, grant in live:
        grouped.setdefault(member, []).append(grant)
    assert grouped == {m: store.member_grants(m) for m in ("m1", "m2")}
    assert [g.redeemed for g in grouped["m2"]] == [True]
    assert store.live_grants(3) is None and len(store.live_grants(4)) == 4
