"""Checkout sessions in the store: the session, its grants and every cap and budget count in
one group commit; retries, state changes, releases and the sweep (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta

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
