"""Checkout sees the basket: the serving bundle folds the basket into the member's affinity.

A small program (three shopper groups, see ``tests.support.affinity.pet_shop``) with a real
affinity pyfunc (an ALS blend with a calibrator) and a constant uplift stand-in, built into a
:class:`~serving.api.bundle.ServingBundle` by ``build_bundle``. Checked: an all-coffee member
with a pet-food basket gets pet offers ranked higher; an unknown member with a basket is served
``personalised`` with the offline fold-in's P(redeem) (1e-6); single and batch decisions are
equal for the same baskets; the batch adapter's basket context (the pyfunc's offline fold-in)
gives the same decisions as the bundle's numpy fold-in.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from serving.engine import DecisionContext, EngineSettings
from tests.support.affinity import GROUPS, OFFERS, offline

NOW = pd.Timestamp("2026-11-20 12:00")
CATEGORY = {o: ("pets" if "pet" in o else g) for g, (_, offers) in GROUPS.items() for o in offers}
PET = ["pet-food-10", "pet-treats"]
MEMBERS = [f"{g}{i}" for g in GROUPS for i in range(25)] + ["coffee-only"]


class Uplift:
    """Uplift stand-in: the same incremental spend for every member and offer."""

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({f"spend:{o}": np.full(len(frame), 20.0) for o in OFFERS})


def _catalog(path: Path) -> Path:
    offers = [
        {
            "offer_id": o,
            "name": o,
            "kind": "credit",
            "reward_value": 2.0,
            "cost": 1.0,
            "channels": ["checkout", "email"],
            "category": CATEGORY[o],
        }
        for o in OFFERS
    ]
    path.write_text(yaml.safe_dump({"program": "pet shop", "offers": offers}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def bundle(pyfunc, tmp_path_factory):
    from serving.api.bundle import build_bundle
    from serving.api.modelset import AFFINITY, UPLIFT, LoadedModel, ModelSet
    from serving.settings import Settings

    tmp = tmp_path_factory.mktemp("bundle")
    frame = pd.DataFrame({"member_id": MEMBERS, "lifecycle_stage": "active", "as_of": NOW})
    frame.to_parquet(tmp / "features.parquet", index=False)
    engine = EngineSettings(
        k=len(OFFERS),
        max_per_kind=len(OFFERS),
        holdout={"share": 0.0},
        exploration={"epsilon": 0.0},
    )
    config = Settings(
        data={"home": tmp},
        serving={
            "catalog": _catalog(tmp / "catalog.yaml"),
            "member_features": tmp / "features.parquet",
        },
        engine=engine,
    )
    models = ModelSet(
        {
            AFFINITY: LoadedModel(
                AFFINITY, "test:affinity", "1", NOW, SimpleNamespace(model=pyfunc)
            ),
            UPLIFT: LoadedModel(UPLIFT, "test:uplift", "1", NOW, Uplift()),
        }
    )
    return build_bundle(models, config)


def _ctx(tid: str) -> DecisionContext:
    return DecisionContext("checkout", NOW, tid)


def _ranked(decision: dict) -> list[str]:
    return [x["offer_id"] for x in decision["offers"]]


def test_the_bundle_builds_a_fold_in(bundle):
    assert bundle.foldin is not None and bundle.foldin.personalises
    assert bundle.foldin.n_offers == len(bundle.offer_ids)


def _p(bundle, member: str, basket: list[str] | None) -> dict[str, float]:
    """The P(redeem) the bundle hands the engine for one member (and basket)."""
    _, inputs = bundle.inputs([member], None if basket is None else [basket])
    return dict(zip(bundle.offer_ids, inputs.p_redeem[0].tolist(), strict=True))


def _order(p: dict[str, float]) -> list[str]:
    return sorted(p, key=lambda o: -p[o])


def test_all_coffee_member_with_a_pet_food_basket_gets_pet_offers_ranked_higher(bundle):
    before = _p(bundle, "coffee-only", None)
    after = _p(bundle, "coffee-only", ["category:pet-food"])
    assert set(_order(before)[:2]) == {"coffee-2for1", "coffee-beans"}  # history: coffee
    for offer in PET:
        assert _order(after).index(offer) < _order(before).index(offer), (before, after)
        assert after[offer] > before[offer] + 0.05
    # the decision uses the folded-in P(redeem): EIV = margin x spend - P(redeem) x cost (the
    # uplift stand-in is the same for every offer, so only the expected cost moves)
    plain = bundle.decide_one("coffee-only", _ctx("t1"), basket_total=30.0)
    pets = bundle.decide_one(
        "coffee-only", _ctx("t1"), basket_total=30.0, basket=["category:pet-food"]
    )
    eiv0 = {x["offer_id"]: x["score"] for x in plain["offers"]}
    eiv1 = {x["offer_id"]: x["score"] for x in pets["offers"]}
    assert set(eiv0) == set(eiv1) == set(OFFERS)
    for offer in OFFERS:  # every offer costs 1.0
        assert eiv1[offer] - eiv0[offer] == pytest.approx(-(after[offer] - before[offer]), abs=1e-4)
    assert plain["fallback"] == pets["fallback"] == "personalised"
    # a basket the model knows nothing about changes nothing
    other = bundle.decide_one("coffee-only", _ctx("t1"), basket_total=30.0, basket=["product:9"])
    assert other["offers"] == plain["offers"]
    assert _p(bundle, "coffee-only", ["product:9"]) == before


def test_unknown_member_with_a_basket_is_personalised_with_the_offline_fold_in(bundle, pyfunc):
    basket = ["category:pet-food", "category:pet-toys"]
    cold = bundle.decide_one("walk-in", _ctx("t2"), basket_total=30.0)
    warm = bundle.decide_one("walk-in", _ctx("t2"), basket_total=30.0, basket=basket)
    assert cold["fallback"] in ("segment_popular", "global_popular")
    assert warm["fallback"] == "personalised"
    assert [x["score"] for x in warm["offers"]] != [x["score"] for x in cold["offers"]]
    p = _p(bundle, "walk-in", basket)
    assert set(_order(p)[:2]) == set(PET)
    want = offline(pyfunc, "walk-in", basket, list(bundle.offer_ids))["p_redeem"].to_numpy()
    np.testing.assert_allclose(list(p.values()), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(bundle.basket_p(-1, basket), want, rtol=0, atol=1e-6)
    assert np.abs(bundle.basket_p(-1, ["category:coffee"]) - want).max() > 0.01


BASKETS = {
    "coffee-only": ["category:pet-food"],
    "pet3": ["category:coffee", "category:bakery"],
    "fresh1": None,
    "walk-in": ["category:pet-toys", "product:unknown"],
    "walk-in-2": ["category:nothing-we-sell"],
    "coffee7": [],
}


def test_single_and_batch_decide_the_same_for_the_same_baskets(bundle):
    ids = list(BASKETS)
    ctx = _ctx("t3")
    batch = bundle.decide(ids, ctx, basket_total=30.0, baskets=list(BASKETS.values()))
    from serving.engine.single import decision_dicts

    many = decision_dicts(bundle.engine, batch.rows, ids, ctx.k)
    for member, got in zip(ids, many, strict=True):
        one = bundle.decide_one(member, ctx, basket_total=30.0, basket=BASKETS[member])
        assert _ranked(one) == _ranked(got), member
        assert one["fallback"] == got["fallback"], member
        np.testing.assert_allclose(
            [x["score"] for x in one["offers"]], [x["score"] for x in got["offers"]], rtol=1e-9
        )
    names = {m: d["fallback"] for m, d in zip(ids, many, strict=True)}
    assert names["walk-in"] == "personalised" and names["walk-in-2"] != "personalised"


def test_the_adapters_basket_context_decides_like_the_bundle(bundle, pyfunc):
    """Batch and evaluation (``model_inputs`` with baskets: the pyfunc's own fold-in) and the
    bundle's numpy fold-in give the same decisions for the same baskets."""
    from serving.engine.adapters import model_inputs

    ids = ["coffee-only", "pet3", "fresh1", "coffee7", "pet11"]
    baskets = [BASKETS.get(m, ["category:produce"]) for m in ids]
    frame = pd.DataFrame({"member_id": ids, "lifecycle_stage": "active"})
    loaded = SimpleNamespace(model=pyfunc)  # as the loader hands it over
    inputs = model_inputs(loaded, Uplift(), frame, bundle.engine.offers, baskets=baskets)
    table, ours = bundle.inputs(ids, baskets)
    np.testing.assert_allclose(ours.p_redeem, inputs.p_redeem, rtol=0, atol=1e-6)
    assert list(ours.fallback) == list(inputs.fallback) == ["personalised"] * len(ids)
    ctx = _ctx("t4")
    a = bundle.engine.decide(table, inputs, ctx, fallback_tables=bundle.fallback_tables).shown()
    b = bundle.decide(ids, ctx, baskets=baskets).shown()
    assert a["member_id"].tolist() == b["member_id"].tolist()
    assert a["offer_id"].tolist() == b["offer_id"].tolist()
    # without baskets the adapter is what it was: the precomputed snapshot rows
    plain = model_inputs(loaded, Uplift(), frame, bundle.engine.offers)
    np.testing.assert_allclose(plain.p_redeem, bundle.inputs(ids)[1].p_redeem, atol=1e-6)
    assert np.abs(plain.p_redeem - inputs.p_redeem).max() > 0.01


def test_baskets_must_match_the_members(bundle):
    from serving.api.bundle import BundleError

    with pytest.raises(BundleError, match="baskets: 1 baskets for 2 members"):
        bundle.inputs(["pet3", "fresh1"], [["category:coffee"]])
