"""A small, valid data directory's tables (strings, as read from CSV) for the validation tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

NOW = pd.Timestamp("2026-11-01")


def good_tables() -> dict[str, pd.DataFrame]:
    members = pd.DataFrame(
        {
            "member_id": ["m1", "m2", "m3"],
            "joined_at": ["2024-01-05", "2025-06-01 10:00:00", "2026-10-01"],
            "tier": ["gold", "bronze", "silver"],
            "points_balance": ["120", "0", "40.5"],
            "email_opt_in": ["true", "false", "1"],
        }
    )
    offers = pd.DataFrame(
        {
            "offer_id": ["o1", "o2"],
            "name": ["10% off coffee", "Birthday treat"],
            "kind": ["discount_pct", "free_item"],
            "reward_value": ["10", "4.5"],
            "cost": ["2.5", "1.5"],
            "channels": ["email|app", "checkout"],
            "surprise": ["false", "true"],
        }
    )
    transactions = pd.DataFrame(
        {
            "transaction_id": ["t1", "t1", "t2", "t3"],
            "member_id": ["m1", "m1", "m2", "m1"],
            "ts": ["2026-01-02 09:00:00"] * 2 + ["2026-02-03 10:00:00", "2026-03-04 11:00:00"],
            "amount": ["3.5", "3.5", "12", "8.25"],
            "category": ["coffee", "coffee", "bakery", "coffee"],
        }
    )
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3", "e4"],
            "member_id": ["m1", "m1", "m2", "m3"],
            "ts": ["2026-01-01", "2026-01-02", "2026-01-01", "2026-01-01"],
            "event": ["sent", "redeemed", "held_out", "sent"],
            "offer_id": ["o1", "o1", None, "o2"],
            "campaign_id": ["c1", "c1", "c1", "c1"],
            "propensity": ["0.45", "0.45", "0.1", "0.45"],
        }
    )
    return {
        "members": members,
        "offers": offers,
        "transactions": transactions,
        "offer_events": events,
    }


def write_csv(tmp: Path, tables: dict[str, pd.DataFrame]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(tmp / f"{name}.csv", index=False)
    return tmp
