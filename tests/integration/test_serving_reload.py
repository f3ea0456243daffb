"""Start-up and reload of the real service (issue 17 items 1, 3, 5 and 12), on a small simulated
program with models trained and registered in a local MLflow store:

* a refused reload leaves ``current.json`` where it was; a restart with the registry
  unreachable then serves the previous copy, and says so (``local_copy`` with the reason);
* budget counters follow the catalog at start and at reload;
* bad inputs at start-up (catalog, feature file, database path) are named on ``/readyz`` with
  the file, the field and the value, without a traceback, with 1 or 2 workers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.api.modelset import DEFAULT_MODELS
from serving.settings import Settings
from tests.support.api import (
    build_program,
    train_affinity_quick,
    train_uplift_quick,
)
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KEY = "reload-test-admin"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A program, its snapshot and both models registered as champion (SQLite MLflow store)."""
    from training.registry import ModelRegistry

    home = tmp_path_factory.mktemp("reload-home")
    program = build_program(home / "data", n_members=600)
    registry = ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home)
    train_affinity_quick(program, registry)
    train_uplift_quick(program, registry)
    return {"home": home, "program": program, "tracking": registry.tracking_uri}


def _own_registry(trained: dict, tmp_path: Path) -> str:
    """A copy of the registry this test may change (artifacts stay where they are)."""
    shutil.copy(trained["home"] / "mlflow.db", tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _app(trained: dict, tmp_path: Path, tracking: str, **paths: Path):
    program = trained["program"]
    settings = Settings(
        data={"home": tmp_path},
        registry={"mlflow_tracking_uri": tracking, "lkg_dir": tmp_path / "lkg"},
        store={"database_url": f"sqlite:///{paths.get('db', tmp_path / 'offers.db')}"},
        serving={
            "api_keys": {KEY: ["admin", "offers:read"]},
            "models": dict(DEFAULT_MODELS),
            "catalog": paths.get("catalog", program["catalog"]),
            "member_features": paths.get("features", program["features"]),
        },
    )
    return create_app(settings)


def _wrong_kind_model():
    """A pyfunc that is not an affinity model (registered as the next affinity version)."""
    import mlflow

    class Const(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):  # type: ignore[no-untyped-def]
            return [0] * len(model_input)

    return Const()


def _register_wrong_affinity(tracking: str) -> str:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking)
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=_wrong_kind_model())
        mv = mlflow.register_model(info.model_uri, "offers-affinity")
    finally:
        mlflow.set_tracking_uri(previous)
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    client.set_registered_model_alias("offers-affinity", "champion", mv.version)
    return str(mv.version)


# -- item 3 and item 12: the last-known-good pointer and the source of each model ------------
def test_refused_reload_keeps_the_pointer_and_a_restart_without_registry_serves_it(
    trained: dict, tmp_path: Path
) -> None:
    tracking = _own_registry(trained, tmp_path)
    pointer = tmp_path / "lkg" / "affinity" / "current.json"
    member = trained["program"]["members"][0]
    with TestClient(_app(trained, tmp_path, tracking)) as c:
        assert c.get("/readyz").status_code == 200
        before = pointer.read_text()
        assert json.loads(before)["version"] == "1"
        wrong = _register_wrong_affinity(tracking)
        refused = c.post("/v1/admin/reload", headers=HEADERS)
        assert refused.status_code == 409, refused.text
        assert pointer.read_text() == before  # not moved to the refused version
        models = {m["name"]: m for m in c.get("/v1/models", headers=HEADERS).json()["models"]}
        assert models["affinity"]["source"] == "registry"
        listed = c.get("/v1/models", headers=HEADERS).json()["models"]
        versions = {m["name"]: m["version"] for m in listed}
        assert versions["affinity"] == "1" and wrong != "1"
    # a restart while the registry still names the wrong version serves the checked copy
    with TestClient(_app(trained, tmp_path, tracking)) as c:
        assert c.get("/readyz").status_code == 200
        models = {m["name"]: m for m in c.get("/v1/models", headers=HEADERS).json()["models"]}
        assert (models["affinity"]["version"], models["affinity"]["source"]) == ("1", "local_copy")
        assert f"affinity v{wrong}" in models["affinity"]["reason"]
        assert pointer.read_text() == before
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with TestClient(_app(trained, tmp_path, dead)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        models = {m["name"]: m for m in c.get("/v1/models", headers=HEADERS).json()["models"]}
        assert models["affinity"]["version"] == "1"
        assert models["affinity"]["source"] == "local_copy"
        assert "registry unavailable" in models["affinity"]["reason"]
        assert c.get(f"/v1/members/{member}/offers", headers=HEADERS).status_code == 200
        # item 12: a reload with the registry down says where each model came from
        reloaded = c.post("/v1/admin/reload", headers=HEADERS)
        assert reloaded.status_code == 200
        body = reloaded.json()
        assert {m["name"]: m["source"] for m in body["models"]} == {
            "affinity": "local_copy",
            "uplift": "local_copy",
        }
        assert all(dead in m["reason"] for m in body["models"])


# -- item 1: budget counters follow the catalog -----------------------------------------------
def _catalog(trained: dict, path: Path, **budgets: dict | None) -> Path:
    raw = yaml.safe_load(trained["program"]["catalog"].read_text())
    for offer in raw["offers"]:
        if offer["offer_id"] in budgets:
            if budgets[offer["offer_id"]] is None:
                offer.pop("budget", None)
            else:
                offer["budget"] = budgets[offer["offer_id"]]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_budget_counters_follow_the_catalog_at_start_and_at_reload(
    trained: dict, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="serving.api.budgets")
    catalog = _catalog(trained, tmp_path / "catalog.yaml", **{"coffee-20pct": {"count": 400000}})
    app = _app(trained, tmp_path, trained["tracking"], catalog=catalog)
    with TestClient(app) as c:
        state = app.state.offers
        for _ in range(60):
            assert state.store.reserve_budget("coffee-20pct", 1.0)
        assert "seasonal-recipes" not in state.budget_counters
        # reload with a catalog where an offer has a new budget and another a smaller one
        changed = {"coffee-20pct": {"count": 50}, "seasonal-recipes": {"count": 16}}
        _catalog(trained, catalog, **changed)
        assert c.post("/v1/admin/reload", headers=HEADERS).status_code == 200
        assert state.store.budget("seasonal-recipes")["budget"] == 16.0
        assert "seasonal-recipes" in state.budget_counters  # it reserves at checkout now
        row = state.store.budget("coffee-20pct")
        assert (row["budget"], row["spent"]) == (50.0, 60.0)
        assert "coffee-20pct" in state.bundle.exhausted  # 60 spent >= 50: not offered
    assert "coffee-20pct: count 400000 -> count 50 (spent 60)" in caplog.text
    # start-up on the same store with the unit changed: count -> money, spent kept
    _catalog(trained, catalog, **{"coffee-20pct": {"money": 500.0}})
    app = _app(trained, tmp_path, trained["tracking"], catalog=catalog)
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
        state = app.state.offers
        row = state.store.budget("coffee-20pct")
        assert (row["budget"], row["unit"], row["spent"]) == (500.0, "money", 60.0)
        assert "coffee-20pct" in state.budget_counters
        assert "coffee-20pct" not in state.bundle.exhausted
    assert "coffee-20pct: count 50 -> money 500 (spent 60)" in caplog.text


# -- item 5: start-up with bad inputs ---------------------------------------------------------
def _bad_inputs(trained: dict, tmp_path: Path) -> dict[str, tuple[dict, str, list[str]]]:
    """name -> (paths for _app, readiness check, words the message must hold)."""
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes(trained["program"]["catalog"].read_bytes() + b"\n# caf\xe9\n")
    lots = tmp_path / "lots.yaml"
    _catalog(trained, lots, **{"coffee-20pct": {"count": "lots"}})
    not_parquet = tmp_path / "features.csv.parquet"
    not_parquet.write_text("member_id,recency_days\nm1,3\n")
    wrong_type = tmp_path / "wrong-type.parquet"
    frame = pd.read_parquet(trained["program"]["features"])
    column = "tenure_days"
    frame[column] = frame[column].astype(str)  # a text column, as a CSV-born file would have
    frame.loc[0, column] = "lots"
    frame.to_parquet(wrong_type, index=False)
    db_dir = tmp_path / "a-directory.db"
    db_dir.mkdir()
    return {
        "catalog not UTF-8": ({"catalog": not_utf8}, "catalog", [str(not_utf8), "UTF-8", "0xe9"]),
        "catalog field": ({"catalog": lots}, "catalog", [str(lots), "coffee-20pct", "lots"]),
        "features not parquet": (
            {"features": not_parquet},
            "member_features",
            [str(not_parquet), "Parquet"],
        ),
        "features column type": (
            {"features": wrong_type},
            "member_features",
            [str(wrong_type), column, "'lots'"],
        ),
        "database path": ({"db": db_dir}, "store", ["OFFERS_DATABASE_URL", str(db_dir)]),
    }


def test_bad_inputs_at_start_up_are_named_on_readyz_without_a_traceback(
    trained: dict, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.ERROR)
    for name, (paths, check, words) in _bad_inputs(trained, tmp_path).items():
        caplog.clear()
        home = tmp_path / name.replace(" ", "-")
        home.mkdir()
        with TestClient(_app(trained, home, trained["tracking"], **paths)) as c:
            ready = c.get("/readyz")
        assert ready.status_code == 503, name
        message = ready.json()["checks"][check]
        for word in words:
            assert word in message, f"{name}: {word!r} not in {message!r}"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and all(r.exc_info is None for r in errors), name
        assert any(words[0] in r.getMessage() for r in errors), name


def _serve(trained: dict, home: Path, workers: int, catalog: Path) -> tuple[int, str, str]:
    """``offers serve --workers N`` with ``catalog``: (readyz status, readyz body, log)."""
    port = free_port()
    env = {
        **os.environ,
        "OFFERS_HOME": str(home),
        "OFFERS_API_KEYS": json.dumps({KEY: ["admin"]}),
        "OFFERS_CATALOG": str(catalog),
        "OFFERS_MEMBER_FEATURES": str(trained["program"]["features"]),
        "MLFLOW_TRACKING_URI": trained["tracking"],
        "OPENBLAS_NUM_THREADS": "1",
    }
    env.pop("OFFERS_DATABASE_URL", None)
    env.pop("OFFERS_MODELS", None)
    log = home / f"serve-{workers}.log"
    cmd = [sys.executable, "-m", "offers", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"offers serve exited: {log.read_text()[-3000:]}"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if "catalog" in r.json()["checks"]:
                    # every worker answers the same: ask a few times (connections spread)
                    bodies = {httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).text
                              for _ in range(6)}  # fmt: skip
                    return r.status_code, "\n".join(sorted(bodies | {r.text})), log.read_text()
            except (httpx.TransportError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"no readiness answer naming the catalog: {log.read_text()[-3000:]}")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_catalog_is_named_the_same_way_with_any_number_of_workers(
    trained: dict, tmp_path: Path, workers: int
) -> None:
    lots = _catalog(trained, tmp_path / "lots.yaml", **{"coffee-20pct": {"count": "lots"}})
    status, bodies, log = _serve(trained, tmp_path, workers, lots)
    assert status == 503
    for body in bodies.splitlines():
        message = json.loads(body)["checks"]["catalog"]
        assert str(lots) in message and "coffee-20pct" in message and "lots" in message
    assert "Traceback" not in log
    assert f"not ready: OFFERS_CATALOG: catalog {lots}" in log


def test_a_silent_tracking_server_delays_start_up_by_the_timeout_only(
    trained: dict, tmp_path: Path, monkeypatch
) -> None:
    """A server that accepts connections and never answers (it held start-up for 46 s):
    start-up serves the local copies after ``OFFERS_REGISTRY_TIMEOUT``."""
    import socket

    with TestClient(_app(trained, tmp_path, trained["tracking"])) as c:  # makes the copies
        assert c.get("/readyz").status_code == 200
    monkeypatch.setenv("OFFERS_REGISTRY_TIMEOUT", "1")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel accepts; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with TestClient(_app(trained, tmp_path, url)) as c:
            took = time.monotonic() - started
            assert c.get("/readyz").status_code == 200
            models = c.get("/v1/models", headers=HEADERS).json()["models"]
    assert {m["source"] for m in models} == {"local_copy"}
    assert all("did not answer within 1 s" in m["reason"] for m in models)
    assert took < 30, f"start-up took {took:.1f} s"  # 2 models x 1 s + loading, not 46 s
