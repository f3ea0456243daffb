"""Decisions through the API, served by a real uvicorn process on loopback.

A small simulated program is written, its member feature snapshot computed, an affinity model
(a small ALS blend) and an uplift model (few trees) trained and registered in a local MLflow
store (SQLite) as ``@champion``; ``offers serve`` equivalents then load them into the bundle.
Covered: every decision endpoint, 401/403/422, cold start, feedback, reload naming the new
version, a dead tracking server at startup (last-known-good copy), and 200 concurrent checkouts
against an offer with budget 50 granting exactly 50.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from features.simulate import SimConfig, simulate
from tests.integration.pg_fixtures import postgres_url  # noqa: F401  (throwaway PostgreSQL)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KEY_ALL = "test-key-all-scopes"
KEY_READ = "test-key-read-only"
SCOPES_ALL = ["offers:read", "checkout:write", "events:write", "admin"]
FAST_TREES = {"n_estimators": 30, "learning_rate": 0.1, "min_child_samples": 100}


# -- program and models ----------------------------------------------------------------------
def build_program(out: Path, n_members: int = 1500, seed: int = 3) -> dict:
    """Simulate, write the tables and the member feature snapshot as of the end of the data."""
    from features.pipeline import load_tables, member_features

    program = simulate(n_members, seed=seed, config=SimConfig(campaign_share=1.0))
    program.write(out)
    tables = load_tables(out)
    end = program.transactions["ts"].max().normalize() + pd.Timedelta(days=1)
    feats = member_features(tables, end).to_pandas()
    path = out.parent / "member_features.parquet"
    feats.to_parquet(path, index=False)
    return {
        "dir": out,
        "catalog": out / "catalog.yaml",
        "features": path,
        "members": feats["member_id"].astype(str).tolist(),
        "end": end,
    }


def train_affinity_quick(program: dict, registry, factors: int = 8, promote: bool = True) -> str:
    """A small ALS blend on the program's interactions, registered and made champion."""
    import tempfile

    from features.validate import load_dir
    from models.affinity import ALS, Blend
    from models.affinity.interactions import build_interactions
    from models.affinity.pyfunc import ENTRY_POINT, input_example, save_artifacts, signature
    from training.affinity_train import AFFINITY_MODEL, requirements

    tables = load_dir(program["dir"])
    data = build_interactions(tables, program["end"])
    als = ALS(factors=factors, iterations=5, weighting="none").fit(data)
    model = Blend.from_als(als, data, freq_weight=1.0, als_weight=1.0, segment_min_members=5)
    offers = [i.split(":", 1)[1] for i in data.item_ids if i.startswith("offer:")]
    with tempfile.TemporaryDirectory() as tmp:
        arts = save_artifacts(model, data, Path(tmp))
        version = registry.log_and_register(
            AFFINITY_MODEL,
            python_model=ENTRY_POINT,
            artifacts=arts,
            signature=signature(),
            input_example=input_example(list(data.member_ids[:2]), offers[:2]),
            params={"factors": factors},
            metrics={"ndcg@10": 0.5},
            test_window="api-test",
            pip_requirements=requirements(),
        )
    if promote:
        registry.promote(AFFINITY_MODEL, version)
    return version


def train_uplift_quick(program: dict, registry) -> str:
    """Uplift with few trees, registered (the first version becomes champion)."""
    from training.uplift_train import UPLIFT_MODEL, UpliftTrainSettings, train_uplift

    result = train_uplift(program["dir"], UpliftTrainSettings(base_params=FAST_TREES), registry)
    registry.promote(UPLIFT_MODEL, result.version)
    return result.version


# -- the server ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``uvicorn serving.api:create_app --factory`` as a child process on loopback."""

    def __init__(
        self,
        home: Path,
        program: dict,
        tracking_uri: str,
        db_url: str | None = None,
        workers: int = 1,
    ):
        self.home, self.program, self.tracking_uri, self.db_url = (
            home,
            program,
            tracking_uri,
            db_url,
        )
        self.workers = workers
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = home / f"server-{self.port}.log"

    def start(self, tracking_uri: str | None = None) -> Server:
        from serving.api.bundle import DEFAULT_MODELS

        env = {
            **os.environ,
            "OFFERS_HOME": str(self.home),
            "OFFERS_API_KEYS": json.dumps({KEY_ALL: SCOPES_ALL, KEY_READ: ["offers:read"]}),
            "OFFERS_MODELS": json.dumps(DEFAULT_MODELS),
            "OFFERS_CATALOG": str(self.program["catalog"]),
            "OFFERS_MEMBER_FEATURES": str(self.program["features"]),
            # the members' past offer events (the catalog may be a copy elsewhere)
            "OFFERS_OFFER_EVENTS": str(self.program["dir"] / "offer_events.parquet"),
            "MLFLOW_TRACKING_URI": tracking_uri or self.tracking_uri,
            "OFFERS_DECISION_LOG_FLUSH_SECONDS": "0.05",
            "OPENBLAS_NUM_THREADS": "1",
        }
        env.pop("OFFERS_DATABASE_URL", None)
        if self.db_url:
            env["OFFERS_DATABASE_URL"] = self.db_url
        cmd = [sys.executable, "-m", "uvicorn", "serving.api:create_app", "--factory",
               "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]  # fmt: skip
        if self.workers > 1:  # the CLI: prepares the store and models once, then N workers
            cmd = [sys.executable, "-m", "offers", "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", str(self.workers)]  # fmt: skip
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in 120 s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self, key: str | None = KEY_ALL) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, transport=_RetryBusy())


class _RetryBusy(httpx.HTTPTransport):
    """Sends a request again after a 503 (the store was busy and nothing was reserved or
    stored), as a till or a feedback client does; other answers are returned as they come."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(20):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.read()
            response.close()
            time.sleep(0.25)
        return response


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Program, snapshot and both models registered as champion in a local MLflow store."""
    from training.registry import ModelRegistry

    home = tmp_path_factory.mktemp("offers-home")
    program = build_program(home / "data")
    registry = ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home)
    versions = {"affinity": train_affinity_quick(program, registry)}
    versions["uplift"] = train_uplift_quick(program, registry)
    return {"home": home, "program": program, "registry": registry, "versions": versions}


@pytest.fixture(scope="module")
def server(world):
    srv = Server(world["home"], world["program"], world["registry"].tracking_uri).start()
    yield srv
    srv.stop()


# -- tests -----------------------------------------------------------------------------------
def test_member_offers_name_decision_versions_and_fallback(server, world) -> None:
    member = world["program"]["members"][0]
    with server.client() as c:
        r = c.get(f"/v1/members/{member}/offers", params={"channel": "app", "k": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["member_id"] == member and body["channel"] == "app"
        assert body["decision_id"] and len(body["offers"]) <= 2
        assert body["model_versions"] == world["versions"]
        assert body["fallback"] in ("personalised", "segment_popular", "global_popular")
        assert [o["rank"] for o in body["offers"]] == list(range(1, len(body["offers"]) + 1))
        assert all(0 <= o["propensity"] <= 1 and o["explanation"] for o in body["offers"])
        # cold start: a member the snapshot does not know gets offers, with the fallback named
        cold = c.get("/v1/members/new-member-123/offers").json()
        assert cold["fallback"] in ("segment_popular", "global_popular")
        assert cold["offers"], "cold-start members get popular offers"
        assert cold["decision_id"] != body["decision_id"]


def test_decisions_are_logged_and_counted(server, world) -> None:
    from serving.store import open_store

    member = world["program"]["members"][1]
    with server.client() as c:
        body = c.get(f"/v1/members/{member}/offers").json()
        deadline = time.monotonic() + 10
        store = open_store(f"sqlite:///{world['home'] / 'offers.db'}", migrate_schema=False)
        try:
            while (row := store.get_decision(body["decision_id"])) is None:
                assert time.monotonic() < deadline, "decision not logged within 10 s"
                time.sleep(0.1)
        finally:
            store.close()
        assert row["member_id"] == member and row["fallback"] == body["fallback"]
        assert [o["offer_id"] for o in row["offers"]] == [o["offer_id"] for o in body["offers"]]
        metrics = c.get("/metrics").text
        assert "offers_decisions_total{" in metrics
        assert f'fallback="{body["fallback"]}"' in metrics


def test_checkout_moments_and_batch(server, world) -> None:
    members = world["program"]["members"]
    with server.client() as c:
        basket = [{"sku": "s1", "category": "coffee", "quantity": 2, "unit_price": 45.0}]
        r = c.post(
            "/v1/checkout/rewards",
            json={"transaction_id": "t-basic", "member_id": members[2], "basket": basket,
                  "total": 90.0},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_versions"] == world["versions"] and out["decision_id"]
        for reward in out["rewards"]:
            assert reward["cost"] >= 0 and reward["offer_id"]
        m = c.get(f"/v1/members/{members[2]}/moments").json()
        assert m["member_id"] == members[2] and isinstance(m["moments"], list)
        ids = [*members[:300], "someone-new", members[0]]  # a repeat is decided once
        r = c.post("/v1/offers/batch", json={"member_ids": ids, "channel": "email", "k": 2})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x["member_id"] for x in lines] == [*members[:300], "someone-new"]
        assert all(len(x["offers"]) <= 2 and x["decision_id"] for x in lines)
        assert lines[-1]["fallback"] in ("segment_popular", "global_popular")
        assert len({x["decision_id"] for x in lines}) == len(lines)


def test_auth_and_validation(server, world) -> None:
    member = world["program"]["members"][0]
    checkout = {"transaction_id": "t-auth", "member_id": member,
                "basket": [{"quantity": 1, "unit_price": 5.0}], "total": 5.0}  # fmt: skip
    with server.client(key=None) as c:
        assert c.get(f"/v1/members/{member}/offers").status_code == 401
        assert c.post("/v1/checkout/rewards", json=checkout).status_code == 401
    with server.client(key=KEY_READ) as c:
        assert c.get(f"/v1/members/{member}/offers").status_code == 200
        assert c.post("/v1/checkout/rewards", json=checkout).status_code == 403
        assert c.post("/v1/admin/reload").status_code == 403
    with server.client() as c:
        r = c.get(f"/v1/members/{member}/offers", params={"k": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.k"
        assert c.get("/v1/members/bad%20id!/offers").status_code == 422
        r = c.post("/v1/checkout/rewards", json={**checkout, "basket": []})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.basket"
        r = c.post("/v1/offers/batch", json={"member_ids": ["m1"] * 10_001})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.member_ids"


def test_feedback_on_a_decision_is_stored_once(server, world) -> None:
    member = world["program"]["members"][3]
    with server.client() as c:
        d = c.get(f"/v1/members/{member}/offers").json()
        offer = d["offers"][0]["offer_id"] if d["offers"] else "none-offer"
        event = {"event_id": f"ev-{d['decision_id']}", "member_id": member, "offer_id": offer,
                 "event": "viewed", "decision_id": d["decision_id"]}  # fmt: skip
        first = c.post("/v1/events", json={"events": [event]}).json()
        again = c.post("/v1/events", json={"events": [event]}).json()
    assert first["stored"] == [event["event_id"]] and again["duplicates"] == [event["event_id"]]


def test_reload_names_the_new_version_then_tracking_down_serves_last_known_good(
    server, world
) -> None:
    member = world["program"]["members"][4]
    new = train_affinity_quick(world["program"], world["registry"], factors=6)
    assert new != world["versions"]["affinity"]
    with server.client() as c:
        r = c.post("/v1/admin/reload")
        assert r.status_code == 200, r.text
        named = {m["name"]: m["version"] for m in r.json()["models"]}
        assert named["affinity"] == new
        assert c.get(f"/v1/members/{member}/offers").json()["model_versions"]["affinity"] == new
    server.stop()
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    down = Server(world["home"], world["program"], dead).start()
    try:
        with down.client() as c:
            body = c.get(f"/v1/members/{member}/offers").json()
            assert body["model_versions"] == {**world["versions"], "affinity": new}
            models = c.get("/v1/models").json()
            assert {m["version"] for m in models["models"]} == {new, world["versions"]["uplift"]}
            assert c.post("/v1/admin/reload").status_code == 200  # falls back to the copy again
    finally:
        down.stop()


def _checkout_target(world, members: list[str], total: float) -> tuple[str, list[str]]:
    """The offer the engine picks at checkout for most of ``members`` when it is the only one
    with budget left (probed in-process on the same champions, the members' history and the
    basket included), and the members who picked it."""
    from serving.api.bundle import DEFAULT_MODELS, BundleConfig, build_bundle, lkg_loader
    from serving.api.modelset import ModelHolder
    from serving.engine import DecisionContext

    home, program = world["home"], world["program"]
    loader = lkg_loader(world["registry"].tracking_uri, home / "probe-models")
    models = ModelHolder(DEFAULT_MODELS, loader).reload()
    config = BundleConfig(
        home=home,
        catalog=program["catalog"],
        member_features=program["features"],
        offer_events=program["dir"] / "offer_events.parquet",
    )
    bundle = build_bundle(models, config)
    ids = list(bundle.offer_ids)
    best, best_members = ids[0], []
    for offer in ids:
        ctx = DecisionContext("checkout", pd.Timestamp.now(), f"probe-{offer}")
        batch = bundle.decide(
            members,
            ctx,
            basket_total=total,
            exhausted=frozenset(ids) - {offer},
            baskets=[("category:grocery",)] * len(members),  # the checkouts' basket, folded in
        )
        shown = batch.shown()
        # chosen on value, not by this probe's exploration draws (keyed on its request id)
        chosen = (shown["offer_id"] == offer) & ~shown["explored"].astype(bool)
        picked = shown.loc[chosen, "member_id"].astype(str).tolist()
        if len(picked) > len(best_members):
            best, best_members = offer, picked
    return best, best_members


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path):
    """A new SQLite file, or a new database on the session's throwaway PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'budget.db'}"
        return
    import uuid

    from sqlalchemy import create_engine, text

    server = request.getfixturevalue("postgres_url")
    name = f"api_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    yield server.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.mark.parametrize("workers", [1, 2])
def test_200_concurrent_checkouts_against_budget_50_grant_exactly_50(
    world, database_url, workers
) -> None:
    """One server process, or ``offers serve --workers 2`` (two processes sharing the store)."""
    import tempfile

    import yaml

    from serving.store import open_store

    # Members who want the target at checkout (many hold offers or reached caps in their
    # history, which the checkout now applies): up to 200 of them, at least 100.
    target, wanting = _checkout_target(world, world["program"]["members"], 80.0)
    members = wanting[:200]
    assert len(members) >= 100, f"probe: best checkout offer {target} wanted by {len(members)}"
    url = database_url
    # The budgets come from the catalog (the store's counters follow it at start-up): 50 for
    # the target, 0 for every other offer.
    raw = yaml.safe_load(world["program"]["catalog"].read_text())
    for offer in raw["offers"]:
        offer["budget"] = {"count": 50 if offer["offer_id"] == target else 0}
    catalog = Path(tempfile.mkdtemp(dir=world["home"])) / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(raw, sort_keys=False))
    program = {**world["program"], "catalog": catalog}
    srv = Server(
        world["home"], program, world["registry"].tracking_uri, url, workers=workers
    ).start()
    if workers > 1:
        import psutil

        spawned = psutil.Process(srv.proc.pid).children(recursive=True)
        assert sum("spawn_main" in " ".join(p.cmdline()) for p in spawned) == workers
    basket = [{"category": "grocery", "quantity": 4, "unit_price": 20.0}]
    try:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        with httpx.Client(
            base_url=srv.url, headers={"X-API-Key": KEY_ALL}, timeout=120, limits=limits
        ) as c:

            def checkout(member: str) -> httpx.Response:
                body = {"transaction_id": f"t-{member}", "member_id": member, "basket": basket,
                        "total": 80.0}  # fmt: skip
                return c.post("/v1/checkout/rewards", json=body)

            with ThreadPoolExecutor(max_workers=200) as pool:
                responses = list(pool.map(checkout, members))
    finally:
        srv.stop()
    assert [r.status_code for r in responses] == [200] * 200
    granted = [x["offer_id"] for r in responses for x in r.json()["rewards"]]
    dropped = [d for r in responses for d in r.json().get("dropped", [])]
    assert granted.count(target) == 50, (granted.count(target), dropped[:5])
    assert set(granted) <= {target}, "offers without budget were granted"
    store = open_store(url, migrate_schema=False)
    try:
        counter = store.budget(target)
    finally:
        store.close()
    assert counter is not None and np.isclose(counter["spent"], 50.0)
