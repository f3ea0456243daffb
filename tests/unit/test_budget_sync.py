"""Store budget counters follow the catalog (issue 17 item 1): size and unit updated, spent kept,
each change logged; an offer whose counter cannot be created is not offered. On SQLite and on a
real PostgreSQL server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from features.catalog.model import default_catalog_path, parse_catalog
from serving.api.budgets import seed_budgets, sync_budgets
from serving.engine import OfferTable
from serving.store import OffersStore, open_store

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path: Path) -> Iterator[OffersStore]:
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'offers.db'}")
        yield opened
        opened.close()
        return
    server = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    opened = open_store(server.rsplit("/", 1)[0] + f"/{name}")
    yield opened
    opened.close()
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _offers(**budgets: dict | None) -> OfferTable:
    """The example catalog with ``offer_id=budget`` overrides (None removes the budget)."""
    raw = yaml.safe_load(default_catalog_path().read_text())
    for offer in raw["offers"]:
        key = offer["offer_id"].replace("-", "_")
        if key in budgets:
            if budgets[key] is None:
                offer.pop("budget", None)
            else:
                offer["budget"] = budgets[key]
    return OfferTable.from_catalog(parse_catalog(raw, "catalog.yaml"))


def _spend(store: OffersStore, offer_id: str, times: int, amount: float = 1.0) -> None:
    for _ in range(times):
        assert store.reserve_budget(offer_id, amount)


def test_a_smaller_count_is_applied_and_what_was_spent_is_kept(store, caplog) -> None:
    seed_budgets(store, _offers(coffee_20pct={"count": 400000}))
    _spend(store, "coffee-20pct", 60)
    caplog.set_level(logging.INFO, logger="serving.api.budgets")
    sync = sync_budgets(store, _offers(coffee_20pct={"count": 50}))
    row = store.budget("coffee-20pct")
    assert (row["budget"], row["unit"], row["spent"]) == (50.0, "count", 60.0)
    assert "coffee-20pct" in sync.counters and "coffee-20pct" in sync.exhausted  # 60 >= 50
    assert [c.offer_id for c in sync.changes] == ["coffee-20pct"]
    assert "coffee-20pct: count 400000 -> count 50 (spent 60)" in caplog.text
    assert not store.reserve_budget("coffee-20pct", 1.0)  # the store refuses more, too
    again = sync_budgets(store, _offers(coffee_20pct={"count": 50}))
    assert again.changes == ()  # nothing to change: nothing logged


def test_a_unit_change_count_to_money_is_applied(store, caplog) -> None:
    seed_budgets(store, _offers(free_pastry_checkout={"count": 500000}))
    _spend(store, "free-pastry-checkout", 3)
    caplog.set_level(logging.INFO, logger="serving.api.budgets")
    sync = sync_budgets(store, _offers(free_pastry_checkout={"money": 30}))
    row = store.budget("free-pastry-checkout")
    assert (row["budget"], row["unit"], row["spent"]) == (30.0, "money", 3.0)
    assert "free-pastry-checkout" in sync.counters
    assert "free-pastry-checkout" not in sync.exhausted
    assert "free-pastry-checkout: count 500000 -> money 30 (spent 3)" in caplog.text


def test_a_new_budget_gets_a_counter_and_a_removed_one_stops_reserving(store) -> None:
    first = sync_budgets(store, _offers(winback_15off=None))
    assert store.budget("winback-15off") is None and "winback-15off" not in first.counters
    second = sync_budgets(store, _offers(winback_15off={"count": 16}))
    assert store.budget("winback-15off")["budget"] == 16.0
    assert "winback-15off" in second.counters
    third = sync_budgets(store, _offers(winback_15off=None))
    assert "winback-15off" not in third.counters  # the row stays (history), not reserved


class _FailingStore:
    """A store whose ``set_budget`` fails for one offer (as a database error would)."""

    def __init__(self, store: OffersStore, offer_id: str) -> None:
        self.store, self.offer_id = store, offer_id

    def budgets(self) -> dict:
        return self.store.budgets()

    def set_budget(self, offer_id: str, budget: float, unit: str = "count") -> None:
        if offer_id == self.offer_id:
            raise RuntimeError("disk I/O error")
        self.store.set_budget(offer_id, budget, unit=unit)


def test_an_offer_whose_counter_cannot_be_created_is_not_offered(store, caplog) -> None:
    caplog.set_level(logging.INFO, logger="serving.api.budgets")
    sync = sync_budgets(_FailingStore(store, "coffee-20pct"), _offers())
    assert "coffee-20pct" in sync.exhausted and "coffee-20pct" not in sync.counters
    assert "disk I/O error" in sync.failed["coffee-20pct"]
    assert "budget coffee-20pct" in caplog.text and "not offered" in caplog.text
    assert store.budget("welcome-coffee") is not None  # the others were created
