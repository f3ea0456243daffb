"""GrantService: group-committed checkout reservations on SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import event

from serving.api.grants import GrantCommitError, GrantService, GrantServiceClosed, plan_grant
from serving.store import OffersStore, ReservationItem, UnknownBudgetError

YEARLY_CAP = 2


def _bundle() -> SimpleNamespace:
    """The slice of a serving bundle that granting reads: catalog costs, units, surprise cap."""
    offers = SimpleNamespace(
        ids=("count", "money", "free", "surprise", "nocounter"),
        cost=np.array([3.0, 2.5, 1.0, 4.0, 9.0]),
        budget_unit=("count", "money", None, "money", "count"),
    )
    settings = SimpleNamespace(surprise=SimpleNamespace(yearly_cap=YEARLY_CAP))
    return SimpleNamespace(engine=SimpleNamespace(offers=offers, settings=settings))


COUNTERS = frozenset({"count", "money", "surprise"})


def _offer(offer_id: str, surprise: bool = False) -> dict:
    return {"offer_id": offer_id, "surprise": surprise, "rank": 1}


class _Gated:
    """A store whose first ``reserve_grants`` waits for ``release``; records group sizes."""

    def __init__(self, inner: OffersStore) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.groups: list[int] = []

    def reserve_grants(self, requests):
        self.groups.append(len(requests))
        if len(self.groups) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return self.inner.reserve_grants(requests)


async def _wait_until(predicate, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_plan_reserves_cost_for_money_one_for_count_and_the_surprise_cap():
    items = plan_grant(
        "m1",
        [_offer("count"), _offer("money"), _offer("free"), _offer("surprise", True)],
        bundle=_bundle(),
        counters=COUNTERS,
        period="2026",
    )
    assert [i.amount for i in items] == [1.0, 2.5, None, 4.0]
    assert [i.cap for i in items[:3]] == [None, None, None]
    assert (items[3].cap.member_id, items[3].cap.period, items[3].cap.cap) == ("m1", "2026", 2)


def test_200_concurrent_grants_on_budget_50_grant_exactly_50(store: OffersStore):
    store.set_budget("count", 50.0, unit="count")
    exhausted: list[set[str]] = []
    service = GrantService(store, on_exhausted=exhausted.append)

    async def main() -> list[list[dict]]:
        return await asyncio.gather(
            *(
                service.grant(f"m{i}", [_offer("count")], bundle=_bundle(), counters=COUNTERS)
                for i in range(200)
            )
        )

    try:
        results = asyncio.run(main())
    finally:
        service.close()
    assert sum(len(r) for r in results) == 50
    assert store.budget("count")["spent"] == pytest.approx(50.0)
    assert set().union(*exhausted) == {"count"}
    assert service.stats.requests == 200
    assert service.stats.commits < 200  # grouped: requests waiting on a commit shared one


def test_grant_keeps_order_skips_capped_surprises_and_exhausted_budgets(store: OffersStore):
    store.set_budget("count", 1.0, unit="count")
    store.set_budget("money", 5.0, unit="money")
    store.set_budget("surprise", 100.0, unit="money")
    exhausted: list[set[str]] = []
    service = GrantService(store, on_exhausted=exhausted.append)
    basket = [_offer("surprise", True), _offer("money"), _offer("free"), _offer("count")]

    async def main() -> list[list[str]]:
        got = []
        for _ in range(3):
            granted = await service.grant("m1", basket, bundle=_bundle(), counters=COUNTERS)
            got.append([x["offer_id"] for x in granted])
        return got

    try:
        got = asyncio.run(main())
    finally:
        service.close()
    assert got == [
        ["surprise", "money", "free", "count"],
        ["surprise", "money", "free"],  # count budget 1 spent
        ["free"],  # yearly surprise cap 2 used; money 2.5 + 2.5 spent
    ]
    assert store.budget("money")["spent"] == pytest.approx(5.0)
    assert store.budget("surprise")["spent"] == pytest.approx(8.0)
    assert set().union(*exhausted) == {"count", "money"}


def test_requests_waiting_on_a_commit_share_the_next_transaction(store: OffersStore):
    store.set_budget("count", 1000.0, unit="count")
    gated = _Gated(store)
    service = GrantService(gated)  # type: ignore[arg-type]

    async def main() -> list[list[dict]]:
        first = asyncio.ensure_future(
            service.grant("m0", [_offer("count")], bundle=_bundle(), counters=COUNTERS)
        )
        await _wait_until(gated.entered.is_set)
        rest = [
            asyncio.ensure_future(
                service.grant(f"m{i}", [_offer("count")], bundle=_bundle(), counters=COUNTERS)
            )
            for i in range(1, 11)
        ]
        await _wait_until(lambda: service.pending == 10)
        gated.release.set()
        return await asyncio.gather(first, *rest)

    try:
        results = asyncio.run(main())
    finally:
        service.close()
    assert gated.groups == [1, 10]
    assert all(len(r) == 1 for r in results)
    assert service.stats.commits == 2 and service.stats.largest_group == 10
    assert service.stats.transaction_seconds > 0


def test_a_failed_commit_fails_every_waiting_request_and_reserves_nothing(store: OffersStore):
    store.set_budget("count", 50.0, unit="count")
    fail = threading.Event()

    @event.listens_for(store.engine, "commit")
    def _refuse(connection) -> None:
        if fail.is_set():
            raise RuntimeError("disk full")

    service = GrantService(store)

    async def main() -> list:
        fail.set()
        return await asyncio.gather(
            *(
                service.grant(f"m{i}", [_offer("count")], bundle=_bundle(), counters=COUNTERS)
                for i in range(20)
            ),
            return_exceptions=True,
        )

    try:
        results = asyncio.run(main())
    finally:
        service.close()
    assert all(isinstance(r, GrantCommitError) for r in results), results
    assert service.stats.failed_groups >= 1 and service.stats.commits == 0
    fail.clear()
    assert store.budget("count")["spent"] == 0.0


def test_unknown_budget_fails_its_request_only(store: OffersStore):
    store.set_budget("count", 10.0, unit="count")
    service = GrantService(store)

    async def main() -> list:
        counters = COUNTERS | {"nocounter"}  # the app believes a counter exists; the store not
        return await asyncio.gather(
            service.grant("m1", [_offer("count")], bundle=_bundle(), counters=counters),
            service.grant("m2", [_offer("nocounter")], bundle=_bundle(), counters=counters),
            service.grant("m3", [_offer("count")], bundle=_bundle(), counters=counters),
            return_exceptions=True,
        )

    try:
        first, second, third = asyncio.run(main())
    finally:
        service.close()
    assert [x["offer_id"] for x in first] == ["count"] == [x["offer_id"] for x in third]
    assert isinstance(second, UnknownBudgetError)


def test_close_drains_queued_requests_then_refuses_new_ones(store: OffersStore):
    store.set_budget("count", 1000.0, unit="count")
    gated = _Gated(store)
    service = GrantService(gated)  # type: ignore[arg-type]

    async def main() -> tuple[list, BaseException | None]:
        futures = [
            asyncio.ensure_future(service.reserve([ReservationItem("count", amount=1.0)]))
            for _ in range(30)
        ]
        await _wait_until(gated.entered.is_set)
        closer = asyncio.get_running_loop().run_in_executor(None, service.close)
        await _wait_until(lambda: service._closing)
        refused = None
        try:
            await service.reserve([ReservationItem("count", amount=1.0)])
        except GrantServiceClosed as exc:
            refused = exc
        gated.release.set()
        outcomes = await asyncio.gather(*futures)
        await closer
        return outcomes, refused

    outcomes, refused = asyncio.run(main())
    assert isinstance(refused, GrantServiceClosed)
    assert [o.granted for o in outcomes] == [[0]] * 30
    assert store.budget("count")["spent"] == pytest.approx(30.0)
    assert not service._thread.is_alive()


def test_offers_without_reservations_need_no_transaction(store: OffersStore):
    service = GrantService(store)
    try:
        got = asyncio.run(
            service.grant("m1", [_offer("free")], bundle=_bundle(), counters=COUNTERS)
        )
    finally:
        service.close()
    assert [x["offer_id"] for x in got] == ["free"] and service.stats.commits == 0


def test_groups_are_bounded_by_max_group(store: OffersStore):
    store.set_budget("count", 1000.0, unit="count")
    gated = _Gated(store)
    service = GrantService(gated, max_group=4)  # type: ignore[arg-type]

    async def main() -> list:
        first = asyncio.ensure_future(service.reserve([ReservationItem("count", amount=1.0)]))
        await _wait_until(gated.entered.is_set)
        rest = [
            asyncio.ensure_future(service.reserve([ReservationItem("count", amount=1.0)]))
            for _ in range(10)
        ]
        await _wait_until(lambda: service.pending == 10)
        gated.release.set()
        return await asyncio.gather(first, *rest)

    try:
        outcomes = asyncio.run(main())
    finally:
        service.close()
    assert gated.groups == [1, 4, 4, 2]
    assert all(o.granted == [0] for o in outcomes)
    with pytest.raises(ValueError, match="max_group"):
        GrantService(store, max_group=0)


def test_a_broken_store_answer_fails_the_group_and_the_writer_keeps_going(store: OffersStore):
    store.set_budget("count", 10.0, unit="count")

    class _Short:
        calls = 0

        def reserve_grants(self, requests):
            _Short.calls += 1
            if _Short.calls == 1:
                return []  # a store answering the wrong number of outcomes
            return store.reserve_grants(requests)

    service = GrantService(_Short())  # type: ignore[arg-type]

    async def main() -> tuple:
        first = await asyncio.gather(
            service.reserve([ReservationItem("count", amount=1.0)]), return_exceptions=True
        )
        second = await service.reserve([ReservationItem("count", amount=1.0)])
        return first[0], second

    try:
        first, second = asyncio.run(main())
    finally:
        service.close()
    assert isinstance(first, GrantCommitError)
    assert second.granted == [0]
