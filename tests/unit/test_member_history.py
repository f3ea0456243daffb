"""MemberHistory (LRU + TTL cache of store grants) and the grant plan's caps and validity."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pytest

from serving.api.checkout import lines_total, total_mismatch
from serving.api.grants import frequency_period, plan_grant, valid_until
from serving.api.history import MemberHistory
from serving.engine.state import PastGrant

T0 = datetime(2026, 12, 2, 10, 0)


class _Reads:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.rows: dict[str, list[PastGrant]] = {}

    def __call__(self, member_id: str) -> list[PastGrant]:
        self.calls.append(member_id)
        return list(self.rows.get(member_id, []))


def _grant(offer: str) -> PastGrant:
    return PastGrant(offer, "checkout", T0, False)


def test_history_hits_the_cache_until_the_ttl_then_reads_the_store_again():
    reads, now = _Reads(), [0.0]
    reads.rows["m1"] = [_grant("a")]
    history = MemberHistory(reads, ttl_seconds=30, clock=lambda: now[0])
    assert asyncio.run(history.get("m1")) == (_grant("a"),)
    now[0] = 29.0
    reads.rows["m1"] = [_grant("a"), _grant("b")]  # another replica granted b
    assert asyncio.run(history.get("m1")) == (_grant("a"),)  # cached
    now[0] = 31.0
    assert asyncio.run(history.get("m1")) == (_grant("a"), _grant("b"))
    assert reads.calls == ["m1", "m1"] and (history.hits, history.misses) == (1, 2)


def test_own_grants_update_the_entry_and_cancels_forget_it():
    reads = _Reads()
    history = MemberHistory(reads, ttl_seconds=60, clock=lambda: 0.0)
    assert asyncio.run(history.get("m1")) == ()
    history.add("m1", [_grant("a")])
    assert history.load("m1") == (_grant("a"),) and reads.calls == ["m1"]
    history.add("m2", [_grant("a")])  # not cached: read from the store when needed
    assert history.cached("m2") is None
    reads.rows["m1"] = []  # cancelled in the store
    history.invalidate(["m1"])
    assert history.load("m1") == () and reads.calls == ["m1", "m1"]


def test_history_is_bounded_least_recently_used_first():
    history = MemberHistory(_Reads(), max_members=2, clock=lambda: 0.0)
    for m in ("m1", "m2"):
        history.load(m)
    history.load("m1")  # m1 used last
    history.load("m3")
    assert len(history) == 2
    assert history.cached("m2") is None and history.cached("m1") == ()
    with pytest.raises(ValueError, match="max_members"):
        MemberHistory(_Reads(), max_members=0)


def _bundle() -> SimpleNamespace:
    offers = SimpleNamespace(
        ids=("capped", "free", "surprise"),
        cost=np.array([1.0, 2.0, 3.0]),
        budget_unit=("count", "money", "count"),
        per_member_cap=np.array([1, 2**31 - 1, 2**31 - 1]),
        valid_to=np.array(["2026-12-10", "2999-12-31", "2999-12-31"], dtype="datetime64[D]"),
        duration_days=np.array([14.0, 3.0, np.nan]),
    )
    settings = SimpleNamespace(
        surprise=SimpleNamespace(yearly_cap=2),
        caps=SimpleNamespace(per_channel={"checkout": 8}, period_days=7.0),
    )
    return SimpleNamespace(engine=SimpleNamespace(offers=offers, settings=settings))


def test_plan_counts_the_lifetime_cap_the_channel_frequency_cap_and_the_surprise_cap():
    offers = [
        {"offer_id": "capped", "surprise": False},
        {"offer_id": "free", "surprise": False},
        {"offer_id": "surprise", "surprise": True},
    ]
    items = plan_grant(
        "m1", offers, bundle=_bundle(), counters={"capped"}, channel="checkout", now=T0
    )
    bucket = frequency_period(T0, 7.0)
    keys = [[(c.cap_key, c.period, c.cap) for c in i.all_caps] for i in items]
    assert keys == [
        [("offer:capped", "all", 1), ("channel:checkout", bucket, 8)],
        [("channel:checkout", bucket, 8)],
        [("surprise", "2026", 2), ("channel:checkout", bucket, 8)],
    ]
    assert [i.amount for i in items] == [1.0, None, None]
    web = plan_grant("m1", offers[:1], bundle=_bundle(), counters=(), channel="web", now=T0)
    assert [c.cap_key for c in web[0].all_caps] == ["offer:capped"]  # no cap for web


def test_frequency_buckets_are_fixed_windows_from_the_epoch():
    assert frequency_period(datetime(1970, 1, 7, 23, 59), 7.0) == "7d-0"
    assert frequency_period(datetime(1970, 1, 8), 7.0) == "7d-1"
    assert frequency_period(datetime(2026, 12, 2), 7.0) == frequency_period(
        datetime(2026, 11, 26), 7.0
    )  # Thursday 26 Nov .. Wednesday 2 Dec
    assert frequency_period(datetime(2026, 12, 3), 7.0) != frequency_period(
        datetime(2026, 12, 2), 7.0
    )


def test_valid_until_is_the_validity_end_or_the_duration_whichever_first():
    o = _bundle().engine.offers
    assert valid_until(o, 0, T0) == datetime(2026, 12, 11)  # valid_to inclusive, before 14 days
    assert valid_until(o, 1, T0) == datetime(2026, 12, 5, 10, 0)  # 3 days
    assert valid_until(o, 2, T0) is None


def test_total_must_match_the_lines_within_a_cent_or_one_percent():
    basket = [
        SimpleNamespace(quantity=4, unit_price=20.0),
        SimpleNamespace(quantity=1, unit_price=0.1),
    ]
    assert lines_total(basket) == pytest.approx(80.1)
    assert not total_mismatch(80.1, 80.1) and not total_mismatch(80.9, 80.1)
    assert total_mismatch(81.0, 80.1) and total_mismatch(1e7, 0.01)
    assert not total_mismatch(0.02, 0.01) and total_mismatch(0.03, 0.01)


def test_roster_skips_members_without_grants_and_follows_own_grants():
    """With a roster, a member without grants costs no per-member read; this process's grants
    put the member on it at once; the roster is read again after the TTL."""
    import asyncio
    from datetime import datetime

    from serving.engine.state import PastGrant

    reads: list[str] = []
    roster_reads: list[int] = []
    now = [0.0]
    store = {"m1": [PastGrant("o1", "checkout", datetime(2026, 1, 1), False)]}

    def read(member_id):
        reads.append(member_id)
        return store.get(member_id, [])

    def read_roster():
        roster_reads.append(1)
        return list(store)

    history = MemberHistory(read, ttl_seconds=10, clock=lambda: now[0], read_roster=read_roster)
    assert asyncio.run(history.get("m2")) == ()
    assert reads == [] and len(roster_reads) == 1  # m2 is not on the roster: no read
    assert asyncio.run(history.get("m1")) == tuple(store["m1"])
    assert reads == ["m1"]
    grant = PastGrant("o2", "checkout", datetime(2026, 1, 2), False)
    history.add("m3", [grant])  # granted here: on the roster at once
    store["m3"] = [grant]
    now[0] = 11.0  # entries and roster are stale
    assert asyncio.run(history.get("m3")) == (grant,)
    assert reads == ["m1", "m3"] and len(roster_reads) == 2
    assert history.load("m2") == () and reads == ["m1", "m3"]
    assert history.stats()["roster_skips"] >= 1


def test_checkout_history_entries_carry_their_decision_id():
    """This process's own grants name their decision, so that once ``offers export`` has put
    them in the snapshot they are recognised there and not counted twice."""
    from serving.api.checkout import past_grants

    offers = [{"offer_id": "a", "surprise": False}, {"offer_id": "s", "surprise": True}]
    got = past_grants(offers, "checkout", T0, "d-7")
    assert [(g.offer_id, g.surprise, g.decision_id) for g in got] == [
        ("a", False, "d-7"),
        ("s", True, "d-7"),
    ]
    assert _grant("a").decision_id is None  # older callers: never matched to a snapshot send
    history = MemberHistory(_Reads(), clock=lambda: 0.0)
    history.load("m1")
    history.add("m1", got)
    assert [g.decision_id for g in history.load("m1")] == ["d-7", "d-7"]


class _Live:
    """Every live grant of a fake store, as ``OffersStore.live_grants`` gives them."""

    def __init__(self, rows: dict[str, list[PastGrant]]) -> None:
        self.rows = rows
        self.calls = 0
        self.during: list = []  # callbacks run inside the read (changes made meanwhile)

    def __call__(self, limit: int) -> list[tuple[str, PastGrant]] | None:
        self.calls += 1
        for callback in self.during:
            callback()
        live = [(m, g) for m, grants in self.rows.items() for g in grants]
        return None if len(live) > limit else live


def test_one_read_of_every_live_grant_fills_every_member_until_the_ttl():
    reads, now = _Reads(), [0.0]
    live = _Live({"m1": [_grant("a")], "m2": [_grant("b"), _grant("c")]})
    history = MemberHistory(reads, ttl_seconds=30, clock=lambda: now[0], read_live=live)
    assert asyncio.run(history.get("m1")) == (_grant("a"),)
    assert asyncio.run(history.get("m2")) == (_grant("b"), _grant("c"))
    assert asyncio.run(history.get("m9")) == ()  # no live grant: no read of its own
    assert reads.calls == [] and live.calls == 1 and history.hits == 1
    live.rows = {"m1": [], "m2": [_grant("b")], "m3": [_grant("d")]}  # other replicas
    now[0] = 29.0
    assert asyncio.run(history.get("m2")) == (_grant("b"), _grant("c"))  # within the TTL
    now[0] = 31.0
    assert asyncio.run(history.get("m2")) == (_grant("b"),)
    assert history.load("m1") == () and history.load("m3") == (_grant("d"),)
    assert reads.calls == [] and live.calls == 2


def test_changes_made_while_the_live_grants_are_read_are_kept():
    """A grant this process adds (or a cancel it makes) while the read runs is not undone by
    the read, which may have started before the change was committed."""
    reads, now = _Reads(), [0.0]
    live = _Live({"m1": [_grant("a")], "m2": [_grant("b")]})
    history = MemberHistory(reads, ttl_seconds=30, clock=lambda: now[0], read_live=live)
    assert history.load("m1") == (_grant("a"),) and history.load("m2") == (_grant("b"),)
    now[0] = 31.0
    live.during = [
        lambda: history.add("m1", [_grant("x")]),  # committed after the read saw m1
        lambda: history.invalidate(["m2"]),  # m2's grant b cancelled meanwhile
    ]
    reads.rows = {"m1": [_grant("a"), _grant("x")], "m2": []}  # the store after both
    # not the read's view (m1 without x, m2 with b): their own reads from the store
    assert history.load("m1") == (_grant("a"), _grant("x"))
    assert history.load("m2") == () and reads.calls == ["m1", "m2"]


def test_above_the_limit_members_are_read_one_by_one():
    reads, rosters = _Reads(), []
    reads.rows = {"m1": [_grant("a")]}
    live = _Live({"m1": [_grant("a")], "m2": [_grant("b"), _grant("c")]})

    def read_roster():
        rosters.append(1)
        return ["m1", "m2"]

    history = MemberHistory(
        reads, clock=lambda: 0.0, read_roster=read_roster, read_live=live, live_max_grants=2
    )
    assert history.load("m1") == (_grant("a"),) and history.load("m9") == ()
    assert reads.calls == ["m1"] and rosters == [1] and live.calls == 1


def test_concurrent_requests_wait_for_one_refresh():
    live = _Live({f"m{i}": [_grant("a")] for i in range(5)})
    history = MemberHistory(_Reads(), clock=lambda: 0.0, read_live=live)

    async def many():
        return await asyncio.gather(*(history.get(f"m{i}") for i in range(5)))

    assert asyncio.run(many()) == [(_grant("a"),)] * 5
    assert live.calls == 1 and history.stats()["refreshes"] == 1


def test_filled_entries_do_not_push_out_the_members_in_use():
    live = _Live({f"m{i}": [_grant("a")] for i in range(5)})
    reads, now = _Reads(), [0.0]
    history = MemberHistory(reads, max_members=3, clock=lambda: now[0], read_live=live)
    history.add("m0", [])  # nothing
    reads.rows = {"used": [_grant("z")]}
    live.rows["used"] = [_grant("z")]
    assert history.load("used") == (_grant("z"),)
    assert len(history) == 3 and history.cached("used") == (_grant("z"),)
