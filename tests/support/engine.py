"""Shared builders for the decision-engine tests: a tiny catalog and member-feature rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog.model import Catalog, parse_catalog

AS_OF = pd.Timestamp("2026-10-31")

OFFERS = [
    {
        "offer_id": "disc",
        "name": "10% off",
        "kind": "discount_pct",
        "reward_value": 5,
        "cost": 2,
        "channels": ["email", "app"],
        "category": "coffee",
        "eligibility": {"tiers": ["gold", "platinum"]},
    },
    {
        "offer_id": "pts",
        "name": "Bonus points",
        "kind": "bonus_points",
        "reward_value": 2,
        "cost": 1,
        "min_spend": 20,
        "channels": ["email", "app", "checkout"],
    },
    {
        "offer_id": "welcome",
        "name": "Welcome",
        "kind": "credit",
        "reward_value": 5,
        "cost": 5,
        "eligibility": {"lifecycle_stages": ["onboarding"]},
        "budget": {"count": 10},
        "per_member_cap": 1,
        "duration_days": 30,
    },
    {
        "offer_id": "seg",
        "name": "BOGO for commuters",
        "kind": "bogo",
        "reward_value": 4,
        "cost": 1.5,
        "eligibility": {"segments": ["commuter"], "min_points": 100},
    },
    {
        "offer_id": "summer",
        "name": "Summer treat",
        "kind": "free_item",
        "reward_value": 3,
        "cost": 1,
        "valid_from": "2026-06-01",
        "valid_to": "2026-08-31",
    },
    {
        "offer_id": "bday",
        "name": "Birthday treat",
        "kind": "free_item",
        "reward_value": 6,
        "cost": 1,
        "surprise": True,
        "moment": "birthday",
    },
    {
        "offer_id": "anniv",
        "name": "Anniversary credit",
        "kind": "credit",
        "reward_value": 5,
        "cost": 3,
        "surprise": True,
        "moment": "anniversary",
    },
    {
        "offer_id": "any-surprise",
        "name": "A little thank you",
        "kind": "bonus_points",
        "reward_value": 1,
        "cost": 0.5,
        "surprise": True,
    },
    {
        "offer_id": "till",
        "name": "Free pastry at the till",
        "kind": "free_item",
        "reward_value": 3,
        "cost": 1,
        "min_spend": 30,
        "channels": ["checkout"],
        "category": "bakery",
    },
    {
        "offer_id": "winback",
        "name": "We miss you",
        "kind": "credit",
        "reward_value": 10,
        "cost": 10,
        "eligibility": {"lifecycle_stages": ["lapsing", "lapsed"]},
        "budget": {"money": 100},
    },
]
IDS = [o["offer_id"] for o in OFFERS]


def catalog() -> Catalog:
    return parse_catalog({"program": "Test", "offers": OFFERS}, "test")


def col(offer_id: str) -> int:
    return IDS.index(offer_id)


def member(**over: object) -> dict[str, object]:
    """One member-feature row with quiet defaults (no moment fires)."""
    row: dict[str, object] = {
        "lifecycle_stage": "active",
        "tier": "silver",
        "segment": "family",
        "points_balance": 50.0,
        "points_tier_window": 700.0,
        "points_to_next_tier": 700.0,
        "next_tier": "gold",
        "days_to_birthday": 100,
        "days_to_anniversary": 100,
        "tenure_days": 800.0,
        "days_since_last_purchase": 5.0,
        "n_purchases_total": 30,
        "purchases_to_next_milestone": 20,
        "next_milestone": 50,
        "purchase_streak_weeks": 1,
        "avg_basket": 25.0,
        "share_coffee": 0.1,
        "share_bakery": 0.1,
    }
    row.update(over)
    return row


def members(*rows: dict[str, object]) -> pd.DataFrame:
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        r.setdefault("member_id", f"m{i}")
        out.append(r)
    return pd.DataFrame(out)


def flat_inputs(n: int, p: float = 0.3, spend: float = 20.0, m: int = len(OFFERS)):
    """Constant P(redeem) and incremental spend for n members."""
    return np.full((n, m), p), np.full((n, m), spend)
