"""Checkout sees the basket, through a real ``offers serve`` process (uvicorn on loopback).

The test program's ALS blend (``test_api_offers.world``) is served; checkouts are sent as the
till sends them (lines with categories and SKUs). A walk-in with a basket of categories the
model knows is answered ``personalised``, with the rewards the bundle decides in-process for
the same basket (the numpy fold-in); a basket the model does not know leaves the fallback chain;
a known member's answer follows the basket's categories.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support.api import Server, server_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _lines(*categories: str) -> list[dict]:
    return [
        {"sku": f"sku-{c}", "category": c, "quantity": 1, "unit_price": 10.0} for c in categories
    ]


def _body(tid: str, member: str, lines: list[dict]) -> dict:
    total = sum(x["quantity"] * x["unit_price"] for x in lines)
    return {"transaction_id": tid, "member_id": member, "basket": lines, "total": total}


@pytest.fixture(scope="module")
def bundle(world):
    from serving.api.bundle import build_bundle
    from serving.api.modelset import DEFAULT_MODELS, ModelHolder
    from serving.loader import lkg_loader

    home, program = world["home"], world["program"]
    loader = lkg_loader(world["registry"].tracking_uri, home / "basket-probe-models")
    models = ModelHolder(DEFAULT_MODELS, loader).reload()
    # exactly what the test Server decides with (its environment, built in this process)
    config = server_settings(home, program, world["registry"].tracking_uri)
    return build_bundle(models, config)


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    # its own store: grants made by earlier modules' checkouts in the shared home would be the
    # members' history on the server and not in the in-process bundle compared with it
    db = f"sqlite:///{tmp_path_factory.mktemp('basket-store') / 'offers.db'}"
    srv = Server(world["home"], world["program"], world["registry"].tracking_uri, db).start()
    yield srv
    srv.stop()


def _in_process(bundle, member: str, lines: list[dict], tid: str) -> dict:
    """The bundle's decision for the same checkout (same transaction id: same exploration)."""
    from serving.api.checkout import basket_items
    from serving.api.schemas import BasketLine
    from serving.engine import DecisionContext

    basket = basket_items([BasketLine(**x) for x in lines])
    ctx = DecisionContext("checkout", pd.Timestamp.now(), tid)
    total = sum(x["quantity"] * x["unit_price"] for x in lines)
    return bundle.decide_one(member, ctx, basket_total=total, basket=basket)


def test_walk_in_with_a_basket_is_personalised_like_the_bundle(server, bundle) -> None:
    assert bundle.foldin is not None and bundle.foldin.personalises
    cats = ("pets", "toys")
    with server.client() as c:
        r = c.post(
            "/v1/checkout/rewards",
            params={"dry_run": "true"},
            json=_body("basket-walk-in", "basket-walk-in", _lines(*cats)),
        )
        assert r.status_code == 200, r.text
        warm = r.json()
        unknown = c.post(
            "/v1/checkout/rewards",
            params={"dry_run": "true"},
            json=_body("basket-walk-in-2", "basket-walk-in-2", _lines("no-such-category")),
        ).json()
    assert warm["fallback"] == "personalised"
    want = _in_process(bundle, "basket-walk-in", _lines(*cats), "basket-walk-in")
    assert [x["offer_id"] for x in warm["rewards"]] == [x["offer_id"] for x in want["offers"]]
    assert unknown["fallback"] in ("segment_popular", "global_popular")


def test_a_known_members_answer_follows_the_basket(server, bundle, world) -> None:
    members = world["program"]["members"][:40]
    baskets = (("coffee", "bakery"), ("pets", "toys", "electronics"))
    moved = 0
    with server.client() as c:
        for member in members:
            got = []
            for n, cats in enumerate(baskets):
                r = c.post(
                    "/v1/checkout/rewards",
                    params={"dry_run": "true"},
                    json=_body(f"basket-{member}-{n}", member, _lines(*cats)),
                )
                assert r.status_code == 200, r.text
                answer = [x["offer_id"] for x in r.json()["rewards"]]
                want = _in_process(bundle, member, _lines(*cats), f"basket-{member}-{n}")
                assert answer == [x["offer_id"] for x in want["offers"]], member
                got.append(answer)
            moved += got[0] != got[1]
    assert moved > 0, "no member's rewards depend on the basket's categories"
