"""The API under a real uvicorn process on loopback: auth, validation, health, metrics,
idempotent events, and no acknowledged event lost to a ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.store import open_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEYS = {"writer": ["events:write"], "reader": ["offers:read"], "root": ["admin"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``uvicorn serving.api:create_app --factory`` as a child process."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "OFFERS_HOME": str(self.home),
            "OFFERS_API_KEYS": json.dumps(KEYS),
            "OPENBLAS_NUM_THREADS": "1",
        }
        env.pop("OFFERS_DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serving.api:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready in 60 s")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def _events(*ids: str) -> dict:
    return {
        "events": [
            {"event_id": i, "member_id": "m1", "offer_id": "o1", "event": "redeemed"} for i in ids
        ]
    }


def test_auth_validation_health_metrics_and_idempotent_events(server: Server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["ready"] is True
        assert c.post("/v1/events", json=_events("a")).status_code == 401
        assert (
            c.post("/v1/events", json=_events("a"), headers={"X-API-Key": "bad"}).status_code == 401
        )
        assert (
            c.post("/v1/events", json=_events("a"), headers={"X-API-Key": "reader"}).status_code
            == 403
        )
        writer = {"X-API-Key": "writer"}
        bad = c.post("/v1/events", json={"events": []}, headers=writer)
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.events"
        first = c.post("/v1/events", json=_events("a", "b"), headers=writer).json()
        second = c.post("/v1/events", json=_events("a", "c"), headers=writer).json()
        assert first["stored"] == ["a", "b"] and second == {
            "received": 2, "stored": ["c"], "duplicates": ["a"]
        }  # fmt: skip
        assert c.get("/v1/models", headers={"X-API-Key": "reader"}).status_code == 200
        assert c.get("/metrics").status_code == 401  # admin scope by default
        text = c.get("/metrics", headers={"X-API-Key": "root"}).text
        assert (
            'offers_http_requests_total{method="POST",route="/v1/events",status="403"} 1.0' in text
        )
        assert 'offers_feedback_events_total{event="redeemed",result="duplicate"} 1.0' in text
        assert 'offers_http_request_duration_seconds_count{method="GET",route="/healthz"}' in text
        assert "openapi" in c.get("/openapi.json").json()
    server.stop()
    store = open_store(f"sqlite:///{server.home / 'offers.db'}", migrate_schema=False)
    assert store.event_ids() == {"a", "b", "c"}
    store.close()


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_event(tmp_path: Path):
    srv = Server(tmp_path)
    srv.start()
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=srv.url, timeout=5, headers={"X-API-Key": "writer"}) as c:
            i = 0
            while not stop.is_set():
                ids = [f"k{i}-{j}" for j in range(5)]
                i += 1
                try:
                    response = c.post("/v1/events", json=_events(*ids))
                except httpx.TransportError:
                    continue  # server gone: keep trying until told to stop
                if response.status_code == 200:
                    acked.extend(response.json()["stored"])

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        srv.kill9()  # mid-stream: requests are in flight
        time.sleep(0.3)
        stop.set()
        thread.join(30)
        assert len(acked) >= 300
        srv.start()  # restart on the same SQLite file (WAL recovery)
        with httpx.Client(base_url=srv.url, timeout=5) as c:
            assert c.get("/readyz").json()["ready"] is True
    finally:
        stop.set()
        srv.stop()
    store = open_store(f"sqlite:///{tmp_path / 'offers.db'}", migrate_schema=False)
    stored = store.event_ids()
    store.close()
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
