"""Issue 17 items 4, 6 and 7 against a real uvicorn server (``run_server``, the options
``offers serve`` uses) on loopback, driven by raw sockets:

* a chunked body without a key is refused (401) before the body is read, and the connection is
  closed; with a key, a chunked body is cut off at the limit (413); the server's memory stays
  flat through a 200 MB chunked upload;
* a request whose headers are never finished, or whose body never arrives, is answered 408 and
  closed; an idle keep-alive connection is closed; connections above the limit get 503;
* events answer 503 with Retry-After (and /readyz 503) while PostgreSQL refuses connections.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, fresh_postgres_database

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEYS = {"writer": ["events:write"], "root": ["admin"]}
LIMIT = 1_000_000
MB = 1024 * 1024


class Server:
    """``serving.api.app.run_server`` in a child process, settings from ``env``."""

    def __init__(self, home: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "OFFERS_HOME": str(home),
            "OFFERS_API_KEYS": json.dumps(KEYS),
            "OFFERS_PORT": str(self.port),
            "OFFERS_MODELS": "{}",
            "OPENBLAS_NUM_THREADS": "1",
            **env,
        }
        for var in ("OFFERS_DATABASE_URL", "OFFERS_API_KEYS_FILE"):
            if var not in env:
                self.env.pop(var, None)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        code = "from serving.api.app import run_server; run_server(log_level='warning')"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in 60 s")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def tight(tmp_path_factory) -> Iterator[Server]:
    """Small limits: 1 MB body, 1 s header and body read, 1 s keep-alive."""
    server = Server(
        tmp_path_factory.mktemp("tight"),
        OFFERS_MAX_BODY_BYTES=str(LIMIT),
        OFFERS_HEADER_READ_TIMEOUT_SECONDS="1",
        OFFERS_BODY_READ_TIMEOUT_SECONDS="1",
        OFFERS_KEEP_ALIVE_TIMEOUT_SECONDS="1",
    ).start()
    yield server
    server.stop()


def _connect(server: Server, timeout: float = 15.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return sock


def _head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 64 KB)."""
    data = b""
    while len(data) < 65536:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
    return data


def _chunk(size: int) -> bytes:
    return b"%x\r\n" % size + b"7" * size + b"\r\n"


def _send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send; False once the server has closed the connection."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


# -- item 6: body limit and key before body -------------------------------------------------
def test_chunked_body_without_key_is_401_before_the_body_is_read(tight: Server):
    with _connect(tight) as sock:
        sock.sendall(_head("/v1/events", "Transfer-Encoding: chunked",
                           "Content-Type: application/json"))  # fmt: skip
        sock.sendall(_chunk(1000))  # the body is never finished: the answer cannot need it
        response = _read_response(sock)  # returns only because the server closed
    assert response.startswith(b"HTTP/1.1 401"), response[:200]
    assert b"connection: close" in response.lower()
    assert b"missing API key" in response


def test_unknown_key_with_a_declared_body_is_401_without_reading_it(tight: Server):
    with _connect(tight) as sock:
        sock.sendall(_head("/v1/events", "Content-Length: 500000", "X-API-Key: guess"))
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 401") and b"unknown API key" in response


def test_chunked_body_over_the_limit_is_413_while_reading(tight: Server):
    with _connect(tight) as sock:
        sock.sendall(_head("/v1/events", "Transfer-Encoding: chunked", "X-API-Key: writer",
                           "Content-Type: application/json"))  # fmt: skip
        sent = 0
        while sent < 100 * MB and _send_quietly(sock, _chunk(64 * 1024)):
            sent += 64 * 1024
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"payload_too_large" in response and b"connection: close" in response.lower()
    assert sent < 100 * MB  # the server stopped reading: the rest could not be sent


def test_declared_length_over_the_limit_is_413_at_once(tight: Server):
    with _connect(tight) as sock:
        sock.sendall(_head("/v1/events", f"Content-Length: {LIMIT + 1}", "X-API-Key: writer"))
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413")


def test_a_body_under_the_limit_still_works_chunked(tight: Server):
    body = json.dumps({"events": [{"event_id": "chunked-1", "member_id": "m1",
                                   "offer_id": "o1", "event": "viewed"}]}).encode()  # fmt: skip
    with _connect(tight) as sock:
        sock.sendall(_head("/v1/events", "Transfer-Encoding: chunked", "X-API-Key: writer",
                           "Content-Type: application/json", "Connection: close"))  # fmt: skip
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert b'"stored":["chunked-1"]' in response


@pytest.mark.slow
@pytest.mark.parametrize("key", [None, "writer"])
def test_server_memory_stays_flat_through_a_large_chunked_upload(tight: Server, key):
    before = tight.rss_mb()
    sent = 0
    with _connect(tight) as sock:
        auth = [f"X-API-Key: {key}"] if key else []
        sock.sendall(_head("/v1/events", "Transfer-Encoding: chunked", *auth))
        block = _chunk(MB)
        while sent < 200 * MB and _send_quietly(sock, block):
            sent += MB
        response = _read_response(sock)
    after = tight.rss_mb()
    assert response.startswith(b"HTTP/1.1 401" if key is None else b"HTTP/1.1 413")
    assert after - before < 50, f"server RSS {before:.0f} -> {after:.0f} MB"


# -- item 7: timeouts and the connection limit -----------------------------------------------
def test_unfinished_headers_are_408_and_closed(tight: Server):
    socks = [_connect(tight) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        responses = [_read_response(sock) for sock in socks]  # each returns once closed
    finally:
        for sock in socks:
            sock.close()
    assert all(r.startswith(b"HTTP/1.1 408") for r in responses), responses[0][:200]


def test_a_connection_that_sends_nothing_is_closed(tight: Server):
    with _connect(tight) as sock:
        assert _read_response(sock).startswith(b"HTTP/1.1 408")


def test_declared_but_unsent_body_is_408_and_closed(tight: Server):
    with _connect(tight) as sock:
        sock.sendall(_head("/v1/events", "Content-Length: 100", "X-API-Key: writer",
                           "Content-Type: application/json"))  # fmt: skip
        sock.sendall(b'{"events": [')
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b"request body not received within 1 s" in response


def test_idle_keep_alive_connection_is_closed(tight: Server):
    with _connect(tight) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b'{"status":"ok"}')


def test_connections_above_the_limit_get_503(tmp_path):
    server = Server(tmp_path, OFFERS_MAX_CONNECTIONS="4").start()
    idle = [_connect(server) for _ in range(4)]
    try:
        time.sleep(0.2)  # let the server accept them (a margin, not a measurement)
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 503
    finally:
        for sock in idle:
            sock.close()
    try:
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/healthz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "connections not released"
            time.sleep(0.1)
    finally:
        server.stop()


# -- item 4: events when PostgreSQL refuses connections --------------------------------------
def test_events_503_and_not_ready_while_postgres_refuses_connections(tmp_path, postgres_url):
    from sqlalchemy import create_engine, text

    event = {"event_id": "pg-1", "member_id": "m1", "offer_id": "o1", "event": "viewed"}
    with fresh_postgres_database(postgres_url) as db_url:
        name = db_url.rsplit("/", 1)[1]
        server = Server(tmp_path, OFFERS_DATABASE_URL=db_url).start()
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        headers = {"X-API-Key": "writer"}
        try:
            with httpx.Client(base_url=server.url, timeout=30, headers=headers) as c:
                assert c.post("/v1/events", json={"events": [event]}).status_code == 200
                with admin.connect() as connection:
                    connection.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
                    connection.execute(text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}'"
                    ))  # fmt: skip
                second = {**event, "event_id": "pg-2"}
                down = c.post("/v1/events", json={"events": [second]})
                assert down.status_code == 503, down.text
                assert down.headers["Retry-After"] == "1"
                assert "no event was stored" in down.json()["detail"]
                ready = c.get("/readyz")
                assert (
                    ready.status_code == 503 and "cannot write" in ready.json()["checks"]["store"]
                )
                with admin.connect() as connection:
                    connection.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
                again = c.post("/v1/events", json={"events": [second]})
                assert again.status_code == 200 and again.json()["stored"] == ["pg-2"]
                assert c.get("/readyz").status_code == 200
        finally:
            server.stop()
            with admin.connect() as connection:
                connection.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
            admin.dispose()
