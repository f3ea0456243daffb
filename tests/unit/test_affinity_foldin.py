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
from tests.support.affinity import OFFERS, offline, pet_shop

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


# ---- FoldIn: the request-path fold-in (numpy, closed form) equals the pyfunc's --------------
# (the pet shop and its ``pyfunc`` fixture: tests/support/affinity.py, tests/unit/conftest.py)


def test_foldin_equals_the_pyfunc_with_a_basket_within_1e6(pyfunc):
    from models.affinity import FoldIn

    catalog = [*OFFERS, "not-in-the-model"]
    members = ["coffee3", "pet0", "fresh7", "coffee-only", "walk-in"]
    fold = FoldIn.from_pyfunc(pyfunc, catalog, members)
    for row, member in enumerate(members):
        for basket in (["pet-food"], ["coffee", "category:dairy", "?"], ["product:x", "pet-toys"]):
            want = offline(pyfunc, member if member != "walk-in" else "nobody", basket, catalog)
            score, p = fold.predict(row if member != "walk-in" else -1, basket)
            assert np.isnan(score[-1]) and np.isnan(p[-1]) and np.isnan(want["p_redeem"].iloc[-1])
            # P(redeem) within 1e-6; the pyfunc's scores are float32 (2.4e-7 apart near 2):
            # relative 1e-6 there
            np.testing.assert_allclose(p[:-1], want["p_redeem"].to_numpy()[:-1], rtol=0, atol=1e-6)
            want_score = want["score"].to_numpy()[:-1]
            np.testing.assert_allclose(score[:-1], want_score, rtol=1e-6, atol=1e-6)
            assert (want["fallback"].iloc[:-1] == PERSONALISED).all()
            # the comparison is not vacuous: the basket moves the scores
            without = offline(pyfunc, member, None, catalog)["score"].to_numpy()[:-1]
            assert np.abs(without - score[:-1]).max() > 1e-3


def test_an_all_coffee_member_with_a_pet_food_basket_ranks_pet_offers_higher(pyfunc):
    from models.affinity import FoldIn

    fold = FoldIn.from_pyfunc(pyfunc, OFFERS, ["coffee-only"])
    pet = [OFFERS.index("pet-food-10"), OFFERS.index("pet-treats")]
    coffee = [OFFERS.index("coffee-2for1"), OFFERS.index("coffee-beans")]
    before = offline(pyfunc, "coffee-only", None)["p_redeem"].to_numpy()
    after = fold.p_redeem(0, ["pet-food", "pet-toys"])
    rank_before = np.argsort(np.argsort(-before))
    rank_after = np.argsort(np.argsort(-after))
    assert set(np.argsort(-before)[:2]) == set(coffee)  # history alone: coffee first
    assert (rank_after[pet] < rank_before[pet]).all()  # each pet offer moves up
    assert (after[pet] > before[pet]).all()


def test_foldin_baskets_the_model_does_not_know(pyfunc):
    from models.affinity import FoldIn

    fold = FoldIn.from_pyfunc(pyfunc, OFFERS)
    assert fold.kind == "category"
    assert not fold.knows(["garden", "product:coffee"]) and fold.knows(["garden", "coffee"])
    with pytest.raises(AffinityInputError, match="basket: none of \\['garden'\\]"):
        fold.predict(-1, ["garden"])
    # offline: a basket of unknown entries is no basket (the member keeps the fallback chain)
    out = offline(pyfunc, "walk-in", ["garden"])
    assert (out["fallback"] != PERSONALISED).all()
    same = offline(pyfunc, "pet3", ["garden"])["score"]
    np.testing.assert_array_equal(same, offline(pyfunc, "pet3", None)["score"])


def test_basket_keys_takes_bare_ids_and_item_keys():
    from models.affinity import basket_keys

    got = basket_keys(["coffee", "category:coffee", "product:123", "tea:x"], "category")
    assert got == ["category:coffee", "category:tea:x", "product:123"]


def test_foldin_refuses_models_without_a_closed_form(pyfunc, tmp_path):
    from models.affinity import FoldIn, Popularity
    from models.affinity.pyfunc import AffinityPyfunc, save_artifacts

    data = pet_shop()
    pop = AffinityPyfunc().load(save_artifacts(Popularity().fit(data), data, tmp_path))
    with pytest.raises(AffinityInputError, match="Popularity has no closed-form fold-in"):
        FoldIn.from_pyfunc(pop, OFFERS)


def test_foldin_short_and_long_rows_solve_the_als_step(pyfunc):
    """Rows shorter than the factor count use Woodbury around B^-1, longer ones solve the
    f x f system: both equal a plain float64 solve of the ALS user step."""
    from models.affinity import FoldIn

    fold = FoldIn.from_pyfunc(pyfunc, OFFERS)
    k1, b, idf, avg = fold.bm25
    for cols in (np.array([0, 3, 7]), np.arange(8)):  # 3 < 5 factors <= 8
        conf = np.linspace(0.5, 7.0, len(cols)).astype(np.float32)
        x = conf.astype(np.float64)
        x = x * (k1 + 1.0) / (k1 * ((1.0 - b) + b * x.sum() / avg) + x) * idf[cols] * fold.alpha
        u = fold.y[cols]
        want = np.linalg.solve(fold.yty_reg + (u.T * (x - 1.0)) @ u, u.T @ x)
        np.testing.assert_allclose(fold._solve(cols, conf), want, rtol=1e-5, atol=1e-6)
