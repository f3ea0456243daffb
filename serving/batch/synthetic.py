"""A simulated send for tests, the benchmark and a demo without trained models.

``synthetic_catalog(m)``: ``m`` regular offers over the offer kinds (a third with a count budget,
a sixth with a money budget, sized for ``budget_members``) plus two surprises.
``synthetic_members(n)``: member-feature rows with the columns the engine reads, seeded.
Scores come from :class:`serving.batch.scorers.SyntheticScorer`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog.model import Catalog, parse_catalog
from features.sources.schema import LIFECYCLE_STAGES, MEMBER_ID, OFFER_KINDS, TIERS

__all__ = ["synthetic_catalog", "synthetic_members"]

_REGULAR_KINDS = [k for k in OFFER_KINDS if k not in ("informational", "donation")]


def synthetic_catalog(
    m: int = 30, budget_members: int = 10_000, seed: int = 0, budgets: bool = True
) -> Catalog:
    """``m`` offers (the last two are surprises); budgets bind at about a third of the send."""
    rng = np.random.default_rng(seed)
    offers = []
    for j in range(m):
        kind = _REGULAR_KINDS[j % len(_REGULAR_KINDS)]
        cost = float(np.round(rng.uniform(0.5, 6.0), 2))
        o: dict[str, object] = {
            "offer_id": f"o{j:03d}",
            "name": f"Offer {j}",
            "kind": kind,
            "reward_value": round(cost * 2, 2),
            "cost": cost,
        }
        if j >= m - 2:
            o["surprise"] = True
        elif budgets and j % 3 == 0:
            o["budget"] = {"count": round(0.02 * budget_members, 1)}
        elif budgets and j % 6 == 1:
            o["budget"] = {"money": round(0.04 * budget_members * cost, 1)}
        offers.append(o)
    return parse_catalog({"program": "Synthetic", "offers": offers}, "synthetic")


def synthetic_members(n: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """Member-feature rows ``m<start>`` .. ``m<start + n - 1>`` (ids zero padded)."""
    rng = np.random.default_rng(seed + start)
    ids = pd.Series(np.arange(start, start + n)).map("m{:08d}".format)
    return pd.DataFrame(
        {
            MEMBER_ID: ids.to_numpy(dtype=object),
            "lifecycle_stage": rng.choice(LIFECYCLE_STAGES, n, p=[0.1, 0.6, 0.2, 0.1]),
            "tier": rng.choice(TIERS, n, p=[0.5, 0.3, 0.15, 0.05]),
            "segment": rng.choice(["family", "commuter", "student"], n),
            "points_balance": rng.gamma(2.0, 200.0, n),
            "days_to_birthday": rng.integers(0, 365, n).astype(np.float64),
            "days_to_anniversary": rng.integers(0, 365, n).astype(np.float64),
            "tenure_days": rng.uniform(1, 2000, n),
            "days_since_last_purchase": rng.exponential(20, n),
            "n_purchases_total": rng.poisson(30, n).astype(np.float64),
            "avg_basket": rng.gamma(3.0, 10.0, n),
        }
    )
