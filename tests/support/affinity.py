"""A pet shop: three groups of members with known tastes, and its affinity pyfunc (fold-in
tests)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from models.affinity import ALS, Blend, Interactions

GROUPS = {  # group -> (categories bought, offers redeemed)
    "coffee": (["coffee", "bakery"], ["coffee-2for1", "coffee-beans"]),
    "pet": (["pet-food", "pet-toys"], ["pet-food-10", "pet-treats"]),
    "fresh": (["produce", "dairy", "bakery"], ["fresh-5", "dairy-bonus"]),
}
OFFERS = [o for _, offers in GROUPS.values() for o in offers]


def pet_shop(n_per_group: int = 25, seed: int = 5) -> Interactions:
    """Members of three groups, each buying its categories and redeeming its offers (with
    noise and a few cross-group purchases); member ``coffee-only`` buys nothing but coffee."""
    cats = sorted({c for cs, _ in GROUPS.values() for c in cs})
    items = [f"offer:{o}" for o in OFFERS] + [f"category:{c}" for c in cats]
    col = {k: i for i, k in enumerate(items)}
    rng = np.random.default_rng(seed)
    rows, ids = [], []
    for g, (gcats, goffers) in GROUPS.items():
        for i in range(n_per_group):
            x = np.zeros(len(items), dtype=np.float32)
            for c in gcats:
                x[col[f"category:{c}"]] = rng.uniform(1.0, 6.0)
            for o in goffers:
                if rng.uniform() < 0.7:
                    x[col[f"offer:{o}"]] = 5.0 * rng.uniform(0.5, 1.0)
            other = rng.choice([c for c in cats if c not in gcats])
            if rng.uniform() < 0.3:
                x[col[f"category:{other}"]] = rng.uniform(0.5, 1.0)
            rows.append(x)
            ids.append(f"{g}{i}")
    only = np.zeros(len(items), dtype=np.float32)
    only[col["category:coffee"]] = 4.0
    rows.append(only)
    ids.append("coffee-only")
    data = Interactions.from_matrix(np.vstack(rows), member_ids=ids, item_ids=items)
    # purchases of differing age (days since the latest basket of each category: 1-200), so
    # that the P(redeem) member terms differ between members; offers keep last_days 1
    last = data.last_days.tocsr(copy=True)
    cats = np.array([k.startswith("category:") for k in items])[last.indices]
    last.data[cats] = np.random.default_rng(seed + 1).integers(1, 201, cats.sum())
    return replace(data, last_days=last)


def pet_shop_pyfunc(out: Path):
    """The pet shop's ALS blend with a Platt calibrator, saved under ``out`` and loaded."""
    from models.affinity import RedeemCalibrator
    from models.affinity.calibration import member_terms, purchase_columns
    from models.affinity.pyfunc import AffinityPyfunc, save_artifacts

    data = pet_shop()
    als = ALS(factors=5, regularization=0.1, alpha=2.0, iterations=25, weighting="bm25").fit(data)
    model = Blend.from_als(
        als, data, freq_weight=0.5, als_weight=1.0, recency_weight=0.3, popularity_weight=0.2
    )
    offers = data.items_of_kind("offer")
    scores = model.score(data, offers).ravel()
    # the member terms of each pair's member (the fold-in must compute the same ones)
    terms = member_terms(data.confidence, data.last_days, purchase_columns(data.item_ids))
    terms = np.repeat(terms, len(offers), axis=0)
    # redemptions drawn around the scores and the member's activity: a calibrator with
    # moderate probabilities and a member term
    rng = np.random.default_rng(1)
    z = 2.0 * (scores - np.median(scores)) + 1.5 * (terms[:, 0] - terms[:, 0].mean())
    labels = (rng.uniform(size=len(scores)) < 1.0 / (1.0 + np.exp(-z))).astype(float)
    calibrator = RedeemCalibrator("platt").fit(scores, labels, members=terms)
    return AffinityPyfunc().load(save_artifacts(model, data, out, calibrator))


def offline(pyfunc, member: str, basket: list[str] | None, offers=OFFERS) -> pd.DataFrame:
    frame = pd.DataFrame({"member_id": member, "offer_id": offers})
    if basket is not None:
        frame["basket"] = "|".join(basket)
    return pyfunc.predict(None, frame)
