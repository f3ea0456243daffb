"""One decision on every path: the API's member offers, the API's batch endpoint and
``offers score`` give the same offers in the same order with the same scores.

A simulated program is trained with the project's training code (``train_and_promote``) into
a local MLflow store; ``offers serve`` runs as a real process on the registered champions with
the member snapshot the batch computes (features as of T with the uplift model's feature
configuration), deciding as of T (``OFFERS_DECISION_TIME``); ``offers score`` sends the same
e-mail campaign at T. Holdout is the same salted hash on every path; exploration is off (its
draws are keyed on the request id, which differs by design). Every path reads the members'
history from the data's ``offer_events`` (per-offer caps, active offers, channel caps, the
last surprise) and applies e-mail consent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tests.support.api import build_program
from tests.support.servers import OffersServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "parity-key"
K = 2
N_CHECK = 160


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from features.pipeline.output import write_member_snapshot
    from offers.demo_pipeline import train_and_promote
    from serving.batch import DEFAULT_MODELS, load_scorer, scorer_feature_config

    home = tmp_path_factory.mktemp("parity")
    program = build_program(home / "data", n_members=1200, seed=11)
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    train_and_promote(program["dir"], home, tracking, seed=0)
    T = program["end"]
    config = scorer_feature_config(load_scorer(DEFAULT_MODELS, tracking))
    snapshot = home / "snapshot.parquet"
    write_member_snapshot(program["dir"], T, snapshot, config)
    env = {
        "OFFERS_HOME": str(home),
        "OFFERS_DATABASE_URL": f"sqlite:///{home / 'api.db'}",
        "MLFLOW_TRACKING_URI": tracking,
        "OFFERS_MODELS": json.dumps(DEFAULT_MODELS),
        "OFFERS_CATALOG": str(program["catalog"]),
        "OFFERS_MEMBER_FEATURES": str(snapshot),
        "OFFERS_API_KEYS": json.dumps({KEY: ["offers:read"]}),
        "OFFERS_DECISION_TIME": T.isoformat(),
        "OFFERS_ENGINE_EXPLORATION__EPSILON": "0",
    }
    server = OffersServer(env, home / "serve.log").start()
    try:
        yield {"home": home, "program": program, "tracking": tracking, "T": T, "url": server.url,
               "snapshot": snapshot}  # fmt: skip
    finally:
        server.stop()


def _api_one(world, ids: list[str]) -> dict[str, dict]:
    out = {}
    with httpx.Client(base_url=world["url"], headers={"X-API-Key": KEY}, timeout=30) as c:
        for m in ids:
            r = c.get(f"/v1/members/{m}/offers", params={"channel": "email", "k": K})
            assert r.status_code == 200, r.text
            out[m] = r.json()
    return out


def _api_batch(world, ids: list[str]) -> dict[str, dict]:
    body = {"member_ids": ids, "channel": "email", "k": K}
    with httpx.Client(base_url=world["url"], headers={"X-API-Key": KEY}, timeout=120) as c:
        r = c.post("/v1/offers/batch", json=body)
    assert r.status_code == 200, r.text
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    return {x["member_id"]: x for x in lines}


def _score(world) -> pd.DataFrame:
    import typer

    from offers.cmd_score import register

    home: Path = world["home"]
    campaign = {
        "campaign_id": "parity",
        "channel": "email",
        "send_date": world["T"].isoformat(),
        "offers_per_member": K,
        "price_sample": None,
        "engine": {"exploration": {"epsilon": 0.0}},
    }
    path = home / "parity.yaml"
    path.write_text(yaml.safe_dump(campaign))
    out = home / "parity.parquet"
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    res = CliRunner().invoke(
        app,
        ["score", "--campaign", str(path), "--data", str(world["program"]["dir"]),
         "--out", str(out), "--no-store", "--tracking-uri", world["tracking"]],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return pd.read_parquet(out)


def _offers(x: dict) -> list[tuple[str, float]]:
    return [(o["offer_id"], float(o["score"])) for o in x["offers"]]


def test_member_offers_batch_endpoint_and_offers_score_decide_the_same(world):
    snapshot = pd.read_parquet(world["snapshot"])
    members = pd.read_parquet(world["program"]["dir"] / "members.parquet")
    opted_out = set(members.loc[members["email_opt_in"] == False, "member_id"].astype(str))  # noqa: E712
    ids = snapshot["member_id"].astype(str).tolist()[:N_CHECK]
    assert set(ids) & opted_out, "the checked members include e-mail opt-outs"

    one = _api_one(world, ids)
    batch = _api_batch(world, ids)
    send = _score(world)
    send = send.loc[send["member_id"].isin(ids)]
    by_member = {
        m: [(o, float(e)) for o, e in zip(g["offer_id"], g["eiv"], strict=True) if pd.notna(o)]
        for m, g in send.sort_values(["member_id", "rank"]).groupby("member_id", sort=False)
    }
    shown = 0
    for m in ids:
        a, b, c = _offers(one[m]), _offers(batch[m]), by_member.get(m, [])
        assert [o for o, _ in a] == [o for o, _ in b] == [o for o, _ in c], m
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=0, atol=1e-9)
        np.testing.assert_allclose([s for _, s in a], [s for _, s in c], rtol=0, atol=1e-9)
        assert one[m]["held_out"] == batch[m]["held_out"]
        assert one[m]["fallback"] == batch[m]["fallback"]
        held = bool(send.loc[send["member_id"] == m, "holdout"].any())
        assert held == one[m]["held_out"], m
        shown += len(a)
        if m in opted_out:  # consent: no e-mail offer on any path
            assert a == b == c == [], m
    assert shown > N_CHECK // 2  # the comparison covers real offers, not empty answers


def test_history_caps_apply_on_every_path(world):
    """A member who already received an offer up to its per_member_cap (in the data's
    offer_events) never gets it again from any path."""
    from features.catalog.model import load_catalog
    from serving.engine import OfferTable, state_from_events

    snapshot = pd.read_parquet(world["snapshot"])
    ids = snapshot["member_id"].astype(str).to_numpy(dtype=object)
    offers = OfferTable.from_catalog(load_catalog(world["program"]["catalog"]))
    events = pd.read_parquet(world["program"]["dir"] / "offer_events.parquet")
    state = state_from_events(events, ids, offers, world["T"])
    capped = state.received >= offers.per_member_cap[None, :]
    rows = np.flatnonzero(capped.any(axis=1))[:40]
    assert len(rows), "the program has members at a per-member cap"
    chosen = [str(ids[r]) for r in rows]
    one = _api_one(world, chosen)
    batch = _api_batch(world, chosen)
    for r, m in zip(rows, chosen, strict=True):
        blocked = {offers.ids[j] for j in np.flatnonzero(capped[r])}
        assert not blocked & {o for o, _ in _offers(one[m])}, m
        assert not blocked & {o for o, _ in _offers(batch[m])}, m
