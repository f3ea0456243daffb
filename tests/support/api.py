"""A small simulated program with both models registered as champion, and ``uvicorn`` serving it.

``build_program`` writes the tables and the member feature snapshot; ``train_affinity_quick`` and
``train_uplift_quick`` register small models in a local MLflow store; :class:`Server` runs
``serving.api:create_app`` (or ``offers serve --workers N``) as a child process on loopback.
The ``world`` fixture (tests/integration/conftest.py) puts them together once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from features.sim.simulate import SimConfig, simulate
from tests.support.servers import free_port

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
    # sorted: DuckDB returns the snapshot's rows in no fixed order (it varies from run to run
    # with thread scheduling), and tests take "the first 200 members" of this list
    feats = member_features(tables, end).to_pandas().sort_values("member_id", ignore_index=True)
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

    from features.sources.validate import load_dir
    from models.affinity import ALS, Blend
    from models.affinity.interactions import build_interactions
    from models.affinity.pyfunc import ENTRY_POINT, input_example, save_artifacts, signature
    from training.affinity.train import AFFINITY_MODEL, requirements

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
    from training.uplift.train import UPLIFT_MODEL, UpliftTrainSettings, train_uplift

    result = train_uplift(program["dir"], UpliftTrainSettings(base_params=FAST_TREES), registry)
    registry.promote(UPLIFT_MODEL, result.version)
    return result.version


# -- the server ------------------------------------------------------------------------------
def server_environment(
    home: Path,
    program: dict,
    tracking_uri: str,
    db_url: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment a test :class:`Server` process gets: this process's, then the test
    program's files, keys, models and store, then ``env`` (added last: overrides the rest)."""
    from serving.api.modelset import DEFAULT_MODELS

    out = {
        **os.environ,
        "OFFERS_HOME": str(home),
        "OFFERS_API_KEYS": json.dumps({KEY_ALL: SCOPES_ALL, KEY_READ: ["offers:read"]}),
        "OFFERS_MODELS": json.dumps(DEFAULT_MODELS),
        # a 1,500-member program with quick models: at the engine's default lower bound
        # (uncertainty_z 1) no offer pays and nothing would be sent; the API's mechanics
        # (budgets, caps, sessions) are tested on the point estimates
        "OFFERS_ENGINE_SCORING__UNCERTAINTY_Z": "0",
        "OFFERS_CATALOG": str(program["catalog"]),
        "OFFERS_MEMBER_FEATURES": str(program["features"]),
        # the members' past offer events (the catalog may be a copy elsewhere)
        "OFFERS_OFFER_EVENTS": str(program["dir"] / "offer_events.parquet"),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OFFERS_DECISION_LOG_FLUSH_SECONDS": "0.05",
        "OPENBLAS_NUM_THREADS": "1",
    }
    out.pop("OFFERS_DATABASE_URL", None)
    if db_url:
        out["OFFERS_DATABASE_URL"] = db_url
    out.update(env or {})
    return out


def server_settings(
    home: Path, program: dict, tracking_uri: str, env: dict[str, str] | None = None
) -> Any:
    """The settings tree a test :class:`Server` process decides with (its ``get_settings()``),
    built in this process from the same environment, so that an in-process probe decides on
    exactly the server's inputs (catalog, snapshot, the members' past offer events, engine
    settings) whatever this process's own environment holds."""
    from serving.settings import Settings

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(server_environment(home, program, tracking_uri, None, env))
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Server:
    """``uvicorn serving.api:create_app --factory`` as a child process on loopback."""

    def __init__(
        self,
        home: Path,
        program: dict,
        tracking_uri: str,
        db_url: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
    ):
        self.home, self.program, self.tracking_uri, self.db_url = (
            home,
            program,
            tracking_uri,
            db_url,
        )
        self.workers = workers
        self.env = env or {}  # added last: overrides the defaults (server_environment)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = home / f"server-{self.port}.log"

    def environment(self, tracking_uri: str | None = None) -> dict[str, str]:
        """The server process's environment (see :func:`server_environment`)."""
        return server_environment(
            self.home, self.program, tracking_uri or self.tracking_uri, self.db_url, self.env
        )

    def start(self, tracking_uri: str | None = None) -> Server:
        env = self.environment(tracking_uri)
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


def checkout_target(world, members: list[str], total: float) -> tuple[str, list[str]]:
    """The offer the engine picks at checkout for most of ``members`` when it is the only one
    with budget left (probed in-process on the same champions, the members' history and the
    basket included), and the members who picked it."""
    from serving.api.bundle import build_bundle
    from serving.api.modelset import DEFAULT_MODELS, ModelHolder
    from serving.engine import DecisionContext
    from serving.loader import lkg_loader

    home, program = world["home"], world["program"]
    loader = lkg_loader(world["registry"].tracking_uri, home / "probe-models")
    models = ModelHolder(DEFAULT_MODELS, loader).reload()
    # what a test Server for this program decides with (point estimates, the members' history)
    config = server_settings(home, program, world["registry"].tracking_uri)
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
