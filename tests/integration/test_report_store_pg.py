"""The program page's store figures and the report from the store give the same answer on
SQLite and on a real PostgreSQL server (the same seeded decisions, grants, checkouts)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.catalog.model import default_catalog_path
from serving.api import ui_data
from serving.reports import incrementality
from serving.reports.sources import from_store
from serving.store import open_store
from serving.store.tables import checkout_sessions, grants
from tests.support.servers import fresh_postgres_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 10, 0)


def _seed_and_read(url: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    ids = np.array([f"m{i}" for i in range(300)], dtype=object)
    held = rng.random(len(ids)) < 0.3
    store = open_store(url)
    try:
        store.set_budget("coffee-20pct", 500.0)
        store.set_budget("bday-treat", 80.0)
        assert store.reserve_budget("coffee-20pct", 120.0)
        decisions, sessions, granted = [], [], []
        for i, m in enumerate(ids):
            offer = "coffee-20pct" if i % 2 else "bday-treat"
            decisions.append(
                {"decision_id": f"d{i}", "member_id": m, "channel": "app",
                 "offers": [] if held[i] else [{"offer_id": offer, "rank": 1, "score": 1.0,
                                                "propensity": 1.0}],
                 "model_versions": {}, "fallback": "personalised",
                 "created_at": T0 + timedelta(days=i % 4), "held_out": bool(held[i]),
                 "holdout_share": 0.3}
            )  # fmt: skip
            if rng.random() < (0.3 if held[i] else 0.55):
                sessions.append(
                    {"transaction_id": f"t{i}", "member_id": m, "decision_id": f"x{i}",
                     "channel": "checkout", "state": "closed",
                     "created_at": T0 + timedelta(days=i % 4, hours=30), "updated_at": T0}
                )  # fmt: skip
            if not held[i] and i % 5 == 0:
                granted.append(
                    {"transaction_id": f"g{i}", "offer_id": offer, "member_id": m,
                     "decision_id": f"d{i}", "channel": "checkout", "surprise": False,
                     "amount": 1.0, "caps": [], "state": "redeemed" if i % 3 == 0 else "granted",
                     "granted_at": T0 + timedelta(days=i % 4),
                     "redeemed_at": T0 + timedelta(days=i % 4 + 1) if i % 3 == 0 else None}
                )  # fmt: skip
        store.log_decisions(decisions)
        with store.engine.begin() as c:
            c.execute(checkout_sessions.insert(), sessions)
            c.execute(grants.insert(), granted)
        budgets = ui_data.budgets_frame(store)
        daily = ui_data.daily_frame(store)
        inputs = from_store(store, default_catalog_path(), since=T0)
    finally:
        store.close()
    table = incrementality(inputs)
    return budgets, daily, table


def test_store_figures_and_report_are_equal_on_sqlite_and_postgresql(
    tmp_path: Path,
    postgres_url: str,
) -> None:
    lite = _seed_and_read(f"sqlite:///{tmp_path / 'store.db'}")
    with fresh_postgres_database(postgres_url) as url:
        pg = _seed_and_read(url)
    budgets, daily, table = lite
    assert budgets.set_index("offer_id").loc["coffee-20pct", "used"] == pytest.approx(0.24)
    assert daily["decisions"].sum() == 300 and len(daily) == 5  # 4 days of decisions + 1
    row = table.set_index(["dimension", "group"]).loc[("all", "all")]
    lo, hi = row["ci_conversion"]
    assert lo < 0.25 < hi  # treated 0.55 vs holdout 0.30 by construction
    assert row["redemptions"] > 0 and row["diff_spend"] is None
    pd.testing.assert_frame_equal(budgets, pg[0], check_dtype=False)
    pd.testing.assert_frame_equal(daily, pg[1], check_dtype=False)
    pd.testing.assert_frame_equal(table, pg[2], check_dtype=False)
