"""Request-time fold-in: a training member folded in ranks like their trained factors; an unknown
member with a basket gets personalised offers through what they buy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.affinity import (
    ALS,
    PERSONALISED,
    AffinityInputError,
    Blend,
    Interactions,
    InteractionSettings,
    as_new_members,
    basket_rows,
    member_rows,
)

ALS_PARAMS = {"factors": 6, "regularization": 0.05, "iterations": 30, "weighting": "bm25"}


def low_rank(n: int = 80, m: int = 40, seed: int = 3) -> Interactions:
    rng = np.random.default_rng(seed)
    u, v = rng.gamma(1.0, size=(n, 3)), rng.gamma(1.0, size=(m, 3))
    p = u @ v.T
    x = (rng.uniform(size=(n, m)) < p / p.max()) * rng.integers(1, 4, size=(n, m))
    return Interactions.from_matrix(x.astype(np.float32))


def test_folding_in_a_training_member_ranks_like_the_trained_factors():
    data = low_rank()
    model = ALS(**ALS_PARAMS).fit(data)
    items = np.arange(data.n_items)
    batch = data.take(np.arange(data.n_members))
    trained = model.rank(batch, items, k=5).items
    folded = model.rank(as_new_members(batch), items, k=5).items
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(trained, folded, strict=True)])
    assert overlap >= 0.9
    v_trained = model.user_vectors(batch)
    v_folded = model.user_vectors(as_new_members(batch))
    cos = (v_trained * v_folded).sum(1) / (
        np.linalg.norm(v_trained, axis=1) * np.linalg.norm(v_folded, axis=1)
    )
    assert np.median(cos) > 0.98


def shop() -> Interactions:
    """30 members: 22 in group A (categories c0-c2, offers o0/o1), 8 in group B (c3-c5, o2/o3).
    Popularity therefore favours o0/o1."""
    items = [f"offer:o{i}" for i in range(4)] + [f"category:c{i}" for i in range(6)]
    x = np.zeros((30, 10), dtype=np.float32)
    x[:22, [0, 1]] = 1.0
    x[:22, 4:7] = 3.0
    x[22:, [2, 3]] = 1.0
    x[22:, 7:10] = 3.0
    rng = np.random.default_rng(0)
    x *= rng.uniform(0.8, 1.2, size=x.shape).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.15] = 0.0
    return Interactions.from_matrix(x, item_ids=items)


@pytest.mark.parametrize("kind", ["als", "blend"])
def test_unknown_member_with_a_basket_gets_personalised_offers(kind):
    data = shop()
    als = ALS(factors=4, regularization=0.01, iterations=30, weighting="none").fit(data)
    model = als if kind == "als" else Blend.from_als(als, data, freq_weight=1.0, als_weight=1.0)
    offers = np.arange(4)
    empty = Interactions.from_matrix(
        np.zeros((1, data.n_items)), member_ids=["walk-in"], item_ids=data.item_ids
    )
    popular = model.rank(empty, offers, k=2).items[0]
    assert set(popular) == {0, 1}  # no history: popularity
    with_basket = basket_rows(empty, [["c3", "c4", "unknown-category"]])
    ranked = model.rank(with_basket, offers, k=2).items[0]
    assert set(ranked) == {2, 3}  # group B's offers, through the basket's categories
    assert model.fallback(with_basket, offers).tolist() == [PERSONALISED]


def test_basket_rows_adds_fresh_purchases():
    data = shop()
    row = data.take(np.array([0]))
    before = row.confidence.toarray()[0].copy()
    after = basket_rows(row, [["c0", "c5"]], settings=InteractionSettings(purchase=2.0))
    delta = after.confidence.toarray()[0] - before
    assert delta[[4, 9]].tolist() == [2.0, 2.0] and delta.sum() == 4.0
    assert after.last_days[0, 9] == 1.0 and after.count[0, 9] == row.count[0, 9] + 1
    with pytest.raises(AffinityInputError, match="baskets: 2 baskets for 1 members"):
        basket_rows(row, [["c0"], ["c1"]])


def test_member_rows_from_canonical_events():
    data = shop()
    events = pd.DataFrame(
        {
            "member_id": ["new"],
            "offer_id": ["o2"],
            "event": ["redeemed"],
            "ts": [pd.Timestamp("2024-01-01")],
        }
    )
    tx = pd.DataFrame(
        {
            "transaction_id": ["b1"],
            "member_id": ["new"],
            "ts": [pd.Timestamp("2024-01-02")],
            "amount": [3.0],
            "category": ["c4"],
        }
    )
    rows = member_rows(data.item_ids, ["new", "nobody"], events, tx, "2024-01-03")
    assert rows.confidence.shape == (2, 10) and rows.confidence[1].nnz == 0
    assert rows.confidence[0, 2] > 0 and rows.confidence[0, 8] > 0
    model = ALS(factors=4, regularization=0.01, iterations=30, weighting="none").fit(data)
    assert set(model.rank(rows.take(np.array([0])), np.arange(4), k=2).items[0]) == {2, 3}
