"""Two serving replicas (each its own engine, GrantService and event loop) group-committing
grants on the same budgets: never overspent, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from serving.api.grants import GrantService
from serving.store import open_store

pytestmark = pytest.mark.integration

OFFERS = ("a", "b", "c")
BUNDLE = SimpleNamespace(
    engine=SimpleNamespace(
        offers=SimpleNamespace(
            ids=OFFERS, cost=np.array([1.0, 2.0, 1.0]), budget_unit=("count", "money", "count")
        ),
        settings=SimpleNamespace(surprise=SimpleNamespace(yearly_cap=1)),
    )
)


def _replica(url: str, replica: int, n: int, results: list, barrier: threading.Barrier) -> None:
    """One replica: ``n`` concurrent checkouts, each granting the three offers in an order
    that differs between replicas (lock order) and counting a surprise for a shared member."""
    store = open_store(url, migrate_schema=False, pool_size=5)
    service = GrantService(store)

    async def main() -> list[list[dict]]:
        barrier.wait()
        order = OFFERS if replica == 0 else OFFERS[::-1]
        calls = []
        for i in range(n):
            offers = [{"offer_id": o, "surprise": o == "c"} for o in order]
            j = i % 20 if replica == 0 else 19 - i % 20  # opposite member (cap row) orders
            member = f"m{j}"  # 20 members shared by both replicas: cap 1 each
            calls.append(service.grant(member, offers, bundle=BUNDLE, counters=set(OFFERS)))
        return await asyncio.gather(*calls)

    try:
        results[replica] = asyncio.run(main())
    finally:
        service.close()
        store.close()


def test_two_replicas_never_overspend_budgets_or_caps(database_url):
    store = open_store(database_url)
    store.set_budget("a", 50.0, unit="count")
    store.set_budget("b", 30.0, unit="money")  # cost 2: 15 grants
    store.set_budget("c", 1000.0, unit="count")  # bounded by the surprise cap: 20 members x 1
    results: list = [None, None]
    barrier = threading.Barrier(2, timeout=60)
    threads = [
        threading.Thread(target=_replica, args=(database_url, r, 100, results, barrier))
        for r in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert all(r is not None for r in results), "a replica failed (see the log)"
    granted = [x["offer_id"] for replica in results for grant in replica for x in grant]
    assert granted.count("a") == 50
    assert granted.count("b") == 15
    assert granted.count("c") == 20
    spent = {o: store.budget(o)["spent"] for o in OFFERS}
    assert spent == pytest.approx({"a": 50.0, "b": 30.0, "c": 20.0})
    assert all(store.cap_usage(f"m{i}", str(_year()))["surprise"] == 1 for i in range(20))
    store.close()


def _year() -> int:
    from serving.store import utcnow

    return utcnow().year
