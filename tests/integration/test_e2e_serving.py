"""End to end, every piece a real process on loopback: an ``mlflow server`` (SQLite backend,
artifacts under the test's directory), a PostgreSQL server, and ``offers serve``.

The models are trained and registered against the tracking server through the CLI
(``offers features``, ``offers train affinity``, ``offers train uplift``, ``offers promote``);
``offers serve`` loads ``@champion`` from it and keeps its store in PostgreSQL. Every endpoint
is called with auth, feedback is sent (a retry stored once, checked in PostgreSQL), then new
versions of both models are trained, registered and promoted, and after
``POST /v1/admin/reload`` the responses name them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from tests.support.servers import MlflowServer, OffersServer, fresh_postgres_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY_ALL = "e2e-key-all-scopes"
KEY_READ = "e2e-key-read-only"
SCOPES_ALL = ["offers:read", "checkout:write", "events:write", "admin"]
UPLIFT_PARAMS = {"n_estimators": 30, "learning_rate": 0.1, "min_child_samples": 100}
COLD = "e2e-walk-in"


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """``offers <args>`` as a child process (stdout and stderr captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "offers", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _done(*procs: subprocess.Popen, timeout: float = 240) -> None:
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{proc.args}: {out[-2000:]}\n{err[-3000:]}"


def _champion(tracking_uri: str, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return str(client.get_model_version_by_alias(name, "champion").version)


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_url):
    """Program and snapshot on disk, both models champion on a real tracking server, and
    ``offers serve`` running against it with a fresh PostgreSQL database."""
    from features.sim.simulate import SimConfig, simulate

    root = tmp_path_factory.mktemp("e2e")
    home, data = root / "home", root / "data"
    tracking = MlflowServer(root).launch()  # boots while the program is simulated
    try:
        program = simulate(1500, seed=11, config=SimConfig(campaign_share=1.0))
        program.write(data)
        tracking.wait_healthy()
        yield from _trained_and_served(root, home, data, program, tracking.url, postgres_url)
    finally:
        tracking.stop()


def _trained_and_served(root, home, data, program, mlflow_server: str, pg_server: str):
    """Body of ``world`` once the tracking server is up (a generator: yields the world)."""
    end = program.transactions["ts"].max().normalize() + pd.Timedelta(days=1)
    snapshot = root / "member_features.parquet"
    env = {
        **os.environ,
        "OFFERS_HOME": str(home),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "OPENBLAS_NUM_THREADS": "1",
        "COLUMNS": "120",
    }
    env.pop("OFFERS_DATABASE_URL", None)
    # the three offline steps are independent: run them side by side (2 cores)
    _done(
        _cli("features", "--data", str(data), "--as-of", str(end.date()), "--out", str(snapshot),
             env=env),
        _cli("train", "affinity", "--data", str(data), "--als-trials", "1", "--bpr-trials", "1",
             env=env),
        _cli("train", "uplift", "--data", str(data), "--base-params", json.dumps(UPLIFT_PARAMS),
             env=env),
    )  # fmt: skip
    versions = {
        "affinity": _champion(mlflow_server, "offers-affinity"),
        "uplift": _champion(mlflow_server, "offers-uplift"),
    }
    members = sorted(pd.read_parquet(snapshot, columns=["member_id"])["member_id"].astype(str))
    with fresh_postgres_database(pg_server) as db_url:
        server = OffersServer(
            {
                "OFFERS_HOME": str(home),
                "OFFERS_DATABASE_URL": db_url,
                "MLFLOW_TRACKING_URI": mlflow_server,
                "OFFERS_API_KEYS": json.dumps({KEY_ALL: SCOPES_ALL, KEY_READ: ["offers:read"]}),
                "OFFERS_MODELS": json.dumps(
                    {
                        "affinity": "models:/offers-affinity@champion",
                        "uplift": "models:/offers-uplift@champion",
                    }
                ),
                "OFFERS_CATALOG": str(data / "catalog.yaml"),
                "OFFERS_MEMBER_FEATURES": str(snapshot),
                "OFFERS_DECISION_LOG_FLUSH_SECONDS": "0.05",
            },
            root / "offers-serve.log",
        ).start()
        try:
            yield {
                "server": server,
                "env": env,
                "data": data,
                "db_url": db_url,
                "tracking_uri": mlflow_server,
                "versions": versions,
                "members": members,
            }
        finally:
            server.stop()


def _client(world, key: str | None = KEY_ALL) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=world["server"].url, headers=headers, timeout=60)


def _moment_member(c: httpx.Client, members: list[str]) -> str:
    for member in members[:200]:
        r = c.get(f"/v1/members/{member}/moments")
        assert r.status_code == 200, r.text
        if r.json()["moments"]:
            return member
    raise AssertionError("no member with a moment among the first 200")


def _model_info(metrics: str) -> dict[str, str]:
    """model -> version from the ``offers_model_info`` gauge lines of /metrics."""
    pattern = re.compile(r'^offers_model_info\{model="([^"]+)",version="([^"]+)"\} 1\.0$', re.M)
    return dict(pattern.findall(metrics))


def _open_store(url: str):
    from serving.store import open_store

    return open_store(url, migrate_schema=False)


def test_every_endpoint_with_auth_and_feedback(world) -> None:
    versions, members = world["versions"], world["members"]
    member = members[0]
    with _client(world, key=None) as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        ready = anon.get("/readyz").json()
        assert ready["ready"] is True and ready["checks"]["store"] == "ok"
        assert anon.get(f"/v1/members/{member}/offers").status_code == 401
        assert anon.post("/v1/events", json={"events": []}).status_code == 401
    with _client(world, key=KEY_READ) as reader:
        assert reader.get(f"/v1/members/{member}/offers").status_code == 200
        basket = [{"quantity": 1, "unit_price": 5.0}]
        body = {"transaction_id": "e2e-t0", "member_id": member, "basket": basket, "total": 5.0}
        assert reader.post("/v1/checkout/rewards", json=body).status_code == 403
        assert reader.post("/v1/admin/reload").status_code == 403

    with _client(world) as c:
        r = c.get(f"/v1/members/{member}/offers", params={"channel": "app", "k": 3})
        assert r.status_code == 200, r.text
        offers = r.json()
        assert offers["decision_id"] and offers["model_versions"] == versions
        assert 1 <= len(offers["offers"]) <= 3

        moment_member = _moment_member(c, members[1:])
        basket = [
            {"sku": "sku-1", "category": "coffee", "quantity": 2, "unit_price": 4.5},
            {"category": "grocery", "quantity": 3, "unit_price": 12.0},
        ]
        checkouts = {}
        for who in (moment_member, COLD):
            body = {"transaction_id": f"e2e-{who}", "member_id": who, "basket": basket,
                    "total": 45.0, "store_id": "s1"}  # fmt: skip
            r = c.post("/v1/checkout/rewards", json=body)
            assert r.status_code == 200, r.text
            checkouts[who] = r.json()
            assert checkouts[who]["decision_id"] and checkouts[who]["model_versions"] == versions
        assert checkouts[moment_member]["moments"]
        # the basket is folded in when the trained model's scores use ALS (then personalised)
        assert checkouts[COLD]["fallback"] in ("personalised", "segment_popular", "global_popular")
        assert checkouts[COLD]["rewards"], "a cold-start member still gets rewards"

        ids = [*members[:50], COLD]
        r = c.post("/v1/offers/batch", json={"member_ids": ids, "channel": "email", "k": 2})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x["member_id"] for x in lines] == ids
        assert all(x["model_versions"] == versions and x["decision_id"] for x in lines)
        assert lines[-1]["fallback"] in ("segment_popular", "global_popular")

        event = {
            "event_id": f"e2e-{offers['decision_id']}",
            "member_id": member,
            "offer_id": offers["offers"][0]["offer_id"],
            "event": "viewed",
            "decision_id": offers["decision_id"],
            "channel": "app",
        }
        redeemed = {**event, "event_id": event["event_id"] + "-r", "event": "redeemed"}
        first = c.post("/v1/events", json={"events": [event, redeemed]})
        again = c.post("/v1/events", json={"events": [event]})
        assert first.status_code == 200 and again.status_code == 200
        assert first.json()["stored"] == [event["event_id"], redeemed["event_id"]]
        assert again.json() == {"received": 1, "stored": [], "duplicates": [event["event_id"]]}

        models = c.get("/v1/models").json()
        assert {m["name"]: m["version"] for m in models["models"]} == versions
        r = c.post("/v1/admin/reload")  # nothing new yet: same versions, still serving
        assert r.status_code == 200 and r.json()["reloaded"] is True
        assert {m["name"]: m["version"] for m in r.json()["models"]} == versions

        metrics = c.get("/metrics").text
        assert _model_info(metrics) == versions
        assert 'offers_feedback_events_total{event="viewed",result="duplicate"} 1.0' in metrics
        assert "offers_decisions_total{" in metrics
        assert 'route="/v1/offers/batch"' in metrics

    store = _open_store(world["db_url"])  # the acknowledged events are in PostgreSQL, once
    try:
        assert {event["event_id"], redeemed["event_id"]} <= store.event_ids()
        deadline = time.monotonic() + 10
        while (row := store.get_decision(offers["decision_id"])) is None:
            assert time.monotonic() < deadline, "decision not logged in PostgreSQL within 10 s"
            time.sleep(0.1)
        assert row["member_id"] == member
    finally:
        store.close()


def test_new_version_registered_promoted_and_reloaded(world) -> None:
    env, old, data = world["env"], world["versions"], str(world["data"])
    _done(  # new versions of both models, side by side
        _cli("train", "affinity", "--data", data, "--als-trials", "1", "--bpr-trials", "1",
             "--seed", "1", env=env),
        _cli("train", "uplift", "--data", data, "--base-params",
             json.dumps({**UPLIFT_PARAMS, "n_estimators": 20}), "--seed", "1", env=env),
    )  # fmt: skip
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=world["tracking_uri"], registry_uri=world["tracking_uri"])
    expected = {}
    for key in ("affinity", "uplift"):
        name = f"offers-{key}"
        new = str(max(int(v.version) for v in client.search_model_versions(f"name='{name}'")))
        assert new != old[key]
        _done(_cli("promote", name, "--version", new, env=env))
        assert _champion(world["tracking_uri"], name) == new
        expected[key] = new

    member = world["members"][5]
    with _client(world) as c:
        before = c.get(f"/v1/members/{member}/offers").json()
        assert before["model_versions"] == old, "no swap before the reload"
        r = c.post("/v1/admin/reload")
        assert r.status_code == 200, r.text
        assert {m["name"]: m["version"] for m in r.json()["models"]} == expected
        after = c.get(f"/v1/members/{member}/offers").json()
        assert after["model_versions"] == expected
        basket = [{"category": "coffee", "quantity": 1, "unit_price": 20.0}]
        body = {"transaction_id": "e2e-reload", "member_id": member, "basket": basket,
                "total": 20.0}  # fmt: skip
        assert c.post("/v1/checkout/rewards", json=body).json()["model_versions"] == expected
        r = c.post("/v1/offers/batch", json={"member_ids": world["members"][:3]})
        assert all(json.loads(x)["model_versions"] == expected for x in r.text.splitlines())
        models = c.get("/v1/models").json()["models"]
        assert {m["name"]: m["version"] for m in models} == expected
        assert _model_info(c.get("/metrics").text) == expected
    log = world["server"].log.read_text()
    assert "Traceback" not in log, log[-3000:]
