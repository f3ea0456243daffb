"""The confidence matrix: weights, time decay, basket counting, windows, BM25 on new rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.affinity import AffinityInputError, InteractionSettings, build_interactions, item_kind
from models.affinity.weighting import Bm25

AS_OF = pd.Timestamp("2024-06-01")


def day(n: float) -> pd.Timestamp:
    return AS_OF - pd.Timedelta(days=n)


def tables() -> dict[str, pd.DataFrame]:
    events = pd.DataFrame(
        {
            "member_id": ["m1", "m1", "m1", "m2", "m2"],
            "offer_id": ["o1", "o1", "o1", "o1", "o2"],
            "event": ["redeemed", "viewed", "sent", "viewed", "redeemed"],
            "ts": [day(90), day(0.5), day(1), day(10), AS_OF],  # the last one is not before as_of
        }
    )
    tx = pd.DataFrame(
        {
            "transaction_id": ["t1", "t1", "t2", "t3", "t4", "t5"],
            "member_id": ["m1", "m1", "m1", "m2", "m2", "m2"],
            "ts": [day(30), day(30), day(5), day(2), day(3), day(4)],
            "amount": [2.0, 3.0, 1.0, 0.0, 4.0, 5.0],
            "category": ["coffee", "coffee", "coffee", "toys", "toys", "pets"],
            "sku": ["a", "b", "a", "c", "c", "d"],
            "quantity": [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        }
    )
    offers = pd.DataFrame({"offer_id": ["o1", "o2", "o3"]})
    return {"offer_events": events, "transactions": tx, "offers": offers}


def cell(data, member: str, item: str, matrix: str = "confidence") -> float:
    r = data.member_index([member])[0]
    c = list(data.item_ids).index(item)
    return float(getattr(data, matrix)[r, c])


def test_weights_and_half_life():
    data = build_interactions(tables(), AS_OF, InteractionSettings(half_life_days=90))
    # redeemed 90 days ago (5 x 0.5) + viewed half a day ago (1 x 0.5 ** (0.5 / 90))
    assert cell(data, "m1", "offer:o1") == pytest.approx(2.5 + 0.5 ** (0.5 / 90), rel=1e-5)
    assert cell(data, "m1", "offer:o1", "count") == 2  # the send weighs 0 and is not counted
    assert cell(data, "m1", "offer:o1", "last_days") == pytest.approx(1.5)
    assert cell(data, "m2", "offer:o2") == 0  # at as_of: not visible


def test_a_basket_counts_once_per_item_and_bad_lines_are_ignored():
    data = build_interactions(tables(), AS_OF, InteractionSettings(half_life_days=None))
    assert cell(data, "m1", "category:coffee") == 2  # baskets t1 (two lines) and t2
    assert cell(data, "m2", "category:toys") == 1  # t3 has amount 0
    assert "category:pets" not in data.item_ids  # quantity 0
    products = build_interactions(
        tables(), AS_OF, InteractionSettings(half_life_days=None, purchase_items="product")
    )
    assert cell(products, "m1", "product:a") == 2 and cell(products, "m1", "product:b") == 1
    assert set(item_kind(products.item_ids)) == {"offer", "product"}


def test_item_index_has_every_offer_and_fixed_indices_are_honoured():
    data = build_interactions(tables(), AS_OF)
    assert {"offer:o1", "offer:o2", "offer:o3"} <= set(data.item_ids)
    fixed = np.array(["offer:o1", "category:coffee"])
    sub = build_interactions(tables(), AS_OF, item_ids=fixed, member_ids=np.array(["m2", "zz"]))
    assert sub.item_ids.tolist() == fixed.tolist() and sub.member_ids.tolist() == ["m2", "zz"]
    assert sub.confidence.shape == (2, 2) and sub.confidence[1].nnz == 0


def test_start_bound_and_weights_are_settings():
    data = build_interactions(tables(), AS_OF, InteractionSettings(viewed=0.0), start=day(20))
    assert cell(data, "m1", "offer:o1") == 0  # redemption before start, view weighs 0
    assert cell(data, "m2", "category:toys") > 0


def test_take_gives_empty_rows_for_unknown_members():
    data = build_interactions(tables(), AS_OF)
    sub = data.take(np.array([1, -1]))
    assert sub.member_ids.tolist() == ["m2", ""] and sub.confidence[1].nnz == 0
    assert sub.confidence[0].toarray().tolist() == data.confidence[1].toarray().tolist()


def test_settings_validate():
    with pytest.raises(ValueError, match="half_life_days"):
        InteractionSettings(half_life_days=0)
    with pytest.raises(ValueError, match="redeemed"):
        InteractionSettings(redeemed=-1)
    with pytest.raises(AffinityInputError, match="offer_events"):
        build_interactions({"transactions": tables()["transactions"]}, AS_OF)


def test_bm25_weighs_a_new_row_like_a_training_row():
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(30, 8)) < 0.4) * rng.integers(1, 5, size=(30, 8)).astype(np.float32)
    m = sp.csr_matrix(x)
    state = Bm25.fit(m)
    whole = state.transform(m).toarray()
    one = state.transform(m[7]).toarray()
    np.testing.assert_allclose(one[0], whole[7], rtol=1e-6)
    assert (whole[x > 0] > 0).all() and (whole[x == 0] == 0).all()
