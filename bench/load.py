"""Load test of the serving API on loopback: latency percentiles and errors per endpoint and rate.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/load.py --url http://127.0.0.1:8000 \\
        --key KEY --features $OFFERS_HOME/features/member_features.parquet \\
        [--rates 250,500,1000,2000] [--seconds 30] [--concurrency 256] [--procs 1]

    # or start the server too, on a home trained by `offers demo --no-serve` (or any trained
    # OFFERS_HOME with OFFERS_MODELS, OFFERS_CATALOG, ... in the environment); --setup-demo N
    # runs that demo first:
    .venv/bin/python bench/load.py --start-server --home /tmp/bench-home --setup-demo 5000

For each rate and each endpoint (``GET /healthz`` as the trivial FastAPI endpoint,
``GET /v1/members/{id}/offers``, ``POST /v1/checkout/rewards``) it sends requests open-loop
(on a fixed schedule, whether earlier ones have answered or not; at most ``--concurrency`` in
flight, the rest counted as ``dropped``) for ``--seconds`` and prints p50/p99/p99.9 latency in
ms, the achieved rate, errors (non-2xx, broken connections, timeouts; timeouts also counted
alone; the JSON line also breaks them down by status code, ``broken``, ``connect`` and
``timeout``) and dropped requests. Bounded: loopback URLs only, at most 5,000 requests/s and 120 s
per step. Latency is measured from the scheduled send time, so a client that falls behind shows
up as latency, not as a lower rate.

The client is lean so that it is not the bottleneck: ``--procs`` generator processes, each an
asyncio (uvloop when installed) event loop writing pre-encoded HTTP/1.1 requests on keep-alive
connections and parsing only the status line and ``Content-Length`` of each response (tens of
microseconds of CPU per request, against ~0.5-1 ms for an httpx client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_RATE = 5_000
MAX_SECONDS = 120
KINDS = ("trivial", "offers", "checkout")
POOL = 4096  # distinct pre-encoded requests per endpoint
IDLE_MAX = 3.0  # s: keep-alive connections idle longer are closed, not reused
SWEEP = 0.05  # s: how often in-flight requests are checked against the timeout
_STATUS = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: |$)")
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


# -- requests ------------------------------------------------------------------------------
def encode_request(method: str, path: str, host: str, key: str, body: bytes | None) -> bytes:
    """One HTTP/1.1 keep-alive request as bytes."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"X-API-Key: {key}"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")


def request_for(kind: str, member: str, host: str, key: str) -> bytes:
    """The request bytes of one endpoint kind for one member."""
    if kind == "trivial":
        return encode_request("GET", "/healthz", host, key, None)
    if kind == "offers":
        return encode_request(
            "GET", f"/v1/members/{member}/offers?channel=app&k=3", host, key, None
        )
    basket = [{"category": "grocery", "quantity": 2, "unit_price": 15.0}]
    body = {"transaction_id": f"load-{TID_MARK.decode()}", "member_id": member,
            "basket": basket, "total": 30.0}  # fmt: skip
    return encode_request("POST", "/v1/checkout/rewards", host, key, json.dumps(body).encode())


TID_MARK = b"@" * 16  # replaced by a unique id in every checkout sent (a new transaction each)
_TIDS = itertools.count()


def fresh_transactions(requests: list[bytes]) -> list[bytes]:
    """The requests with every checkout's transaction id made unique (same length: the
    Content-Length stays right). Done before a step starts, outside the timed loop."""
    prefix = f"{os.getpid() % 0xFFFFFF:06x}".encode()
    return [
        r.replace(TID_MARK, prefix + f"{next(_TIDS):010x}".encode()) if TID_MARK in r else r
        for r in requests
    ]


# -- response parsing ----------------------------------------------------------------------
class ResponseParser:
    """Incremental HTTP/1.1 response framing: status code, Content-Length or chunked body.

    ``feed(data)`` returns the list of (status, keep_alive) of the responses completed by
    ``data``; anything malformed raises ValueError.
    """

    __slots__ = ("_buf", "_chunked", "_keep", "_need", "_status")

    def __init__(self) -> None:
        self._buf = b""
        self._status = 0
        self._need = -1  # body bytes still expected; -1 while reading the head
        self._chunked = False
        self._keep = True

    def feed(self, data: bytes) -> list[tuple[int, bool]]:
        self._buf = self._buf + data if self._buf else data
        done = []
        while True:
            if self._need < 0:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > 65536:
                        raise ValueError("response head larger than 64 KiB")
                    return done
                self._head(self._buf[:end])
                self._buf = self._buf[end + 4 :]
            if self._chunked:
                end = self._buf.find(b"0\r\n\r\n")
                if end < 0 or (end > 0 and self._buf[end - 2 : end] != b"\r\n"):
                    return done
                self._buf = self._buf[end + 5 :]
            else:
                if len(self._buf) < self._need:
                    return done
                self._buf = self._buf[self._need :]
            done.append((self._status, self._keep))
            self._need = -1

    def _head(self, head: bytes) -> None:
        status = _STATUS.match(head)
        if status is None:
            first = head.split(b"\r\n", 1)[0]
            raise ValueError(f"bad status line {first[:80]!r}")
        self._status = int(status.group(2))
        length = _LENGTH.search(head)
        self._need = int(length.group(1)) if length else 0
        self._chunked = _CHUNKED.search(head) is not None
        self._keep = status.group(1) == b"1" and _CLOSE.search(head) is None


# -- generator -----------------------------------------------------------------------------
@dataclass
class StepCounts:
    """Raw outcome of one step in one generator process."""

    latencies_ms: list[float] = field(default_factory=list)
    ok_ms: list[float] = field(default_factory=list)  # the 2xx answers' latencies
    errors: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # "503", "broken", "connect", "timeout"
    timeouts: int = 0
    dropped: int = 0
    end: float = 0.0


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.scheduled = 0.0
        self.sent = 0.0
        self.busy = False
        self.last_used = time.perf_counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes, scheduled: float) -> None:
        self.busy = True
        self.scheduled = scheduled
        self.sent = time.perf_counter()
        self.gen.inflight_conns.add(self)
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        try:
            done = self.parser.feed(data)
        except ValueError:
            self._fail(timeout=False)
            return
        for status, keep in done:
            if not self.busy:
                self._fail(timeout=False)  # a response nobody asked for
                return
            self.busy = False
            self.gen.inflight_conns.discard(self)
            self.gen.finished(self, status, self.scheduled, keep)

    def _fail(self, *, timeout: bool) -> None:
        if self.busy:
            self.busy = False
            self.gen.inflight_conns.discard(self)
            self.gen.failed(self, timeout=timeout)
        self.gen.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(timeout=False)


class Generator:
    """Open-loop request generator over a pool of keep-alive connections (one event loop)."""

    def __init__(self, host: str, port: int, *, concurrency: int, timeout: float) -> None:
        self.host, self.port = host, port
        self.concurrency = concurrency
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Conn] = []
        self.inflight_conns: set[_Conn] = set()
        self.open = 0  # connections open or opening
        self.inflight = 0
        self.counts = StepCounts()
        self._drained: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def _connect(self) -> _Conn:
        self.open += 1
        try:
            _, conn = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.open -= 1
            raise
        return conn

    async def warm(self, n: int) -> None:
        """Have ``n`` fresh idle connections open ahead of a step."""
        now = time.perf_counter()
        for conn in [c for c in self.idle if now - c.last_used >= IDLE_MAX]:
            self.discard(conn)
            conn.transport.close()  # type: ignore[union-attr]
        n = min(n, self.concurrency) - self.open
        if n > 0:
            self.idle.extend(await asyncio.gather(*(self._connect() for _ in range(n))))

    def finished(self, conn: _Conn, status: int, scheduled: float, keep: bool) -> None:
        ms = (time.perf_counter() - scheduled) * 1000.0
        self.counts.latencies_ms.append(ms)
        if status >= 300:
            self._error(str(status))
        else:
            self.counts.ok_ms.append(ms)
        if keep:
            conn.last_used = time.perf_counter()
            self.idle.append(conn)
        else:
            self.discard(conn)
            conn.transport.close()  # type: ignore[union-attr]
        self._done_one()

    def failed(self, conn: _Conn, *, timeout: bool) -> None:
        self._error("timeout" if timeout else "broken")
        self.counts.timeouts += timeout
        self._done_one()

    def _error(self, kind: str) -> None:
        self.counts.errors += 1
        self.counts.kinds[kind] = self.counts.kinds.get(kind, 0) + 1

    def discard(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.transport is not None and not getattr(conn, "_counted_closed", False):
            conn._counted_closed = True  # type: ignore[attr-defined]
            self.open -= 1

    def _sweep(self) -> None:
        """Fail the requests in flight for longer than ``timeout`` (checked every SWEEP s:
        one timer for the step instead of one per request)."""
        limit = time.perf_counter() - self.timeout
        for conn in [c for c in self.inflight_conns if c.sent < limit]:
            conn._fail(timeout=True)
        self._sweeper = self.loop.call_later(SWEEP, self._sweep)

    def _take_idle(self) -> _Conn | None:
        """The most recently used idle connection; those idle longer than ``IDLE_MAX`` are
        closed instead (the server may be closing them right now: uvicorn's keep-alive is 5 s,
        and a request written into that race would count as a broken connection)."""
        now = time.perf_counter()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.last_used < IDLE_MAX:
                return conn
            self.discard(conn)
            conn.transport.close()  # type: ignore[union-attr]
        return None

    def _done_one(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._drained is not None:
            self._drained.set()

    async def _send_new(self, data: bytes, scheduled: float) -> None:
        try:
            conn = await self._connect()
        except OSError:
            self._error("connect")
            self._done_one()
            return
        conn.send(data, scheduled)

    async def step(self, requests: list[bytes], start: float, interval: float) -> StepCounts:
        """Send ``requests[i]`` at ``start + i * interval`` (perf_counter clock); wait for all."""
        self.counts = StepCounts()
        pending: set[asyncio.Task] = set()
        self._sweeper = self.loop.call_later(SWEEP, self._sweep)
        for i, data in enumerate(requests):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            if self.inflight >= self.concurrency:
                self.counts.dropped += 1
                continue
            self.inflight += 1
            conn = self._take_idle()
            if conn is not None:
                conn.send(data, due)
            elif self.open < self.concurrency:
                task = asyncio.ensure_future(self._send_new(data, due))
                pending.add(task)
                task.add_done_callback(pending.discard)
            else:  # every connection is busy (or still opening)
                self.inflight -= 1
                self.counts.dropped += 1
        try:
            if self.inflight:
                self._drained = asyncio.Event()
                await self._drained.wait()
                self._drained = None
        finally:
            self._sweeper.cancel()
        self.counts.end = time.perf_counter()
        return self.counts


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def worker(conn: mp.connection.Connection, host: str, port: int, concurrency: int) -> None:
    """Generator process: runs the steps the parent sends over ``conn`` until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    _install_uvloop()

    async def serve() -> None:
        gen = Generator(host, port, concurrency=concurrency, timeout=10.0)
        while True:
            message = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            if message is None:
                return
            if message[0] == "warm":  # open connections, then say ready
                await gen.warm(message[1])
                conn.send("ready")
                continue
            _, pool, picks, start, interval, timeout = message
            requests = [pool[i] for i in np.frombuffer(picks, dtype=np.int32).tolist()]
            requests = fresh_transactions(requests)
            gen.timeout = timeout
            cpu0 = time.process_time()
            counts = await gen.step(requests, start, interval)
            lat = np.asarray(counts.latencies_ms, dtype=np.float64)
            ok = np.asarray(counts.ok_ms, dtype=np.float64)
            conn.send((lat.tobytes(), counts.errors, counts.timeouts, counts.dropped,
                       counts.end, time.process_time() - cpu0, counts.kinds,
                       ok.tobytes()))  # fmt: skip

    asyncio.run(serve())


# -- statistics ----------------------------------------------------------------------------
def summarize(
    kind: str,
    rate: float,
    latencies_ms: np.ndarray,
    *,
    errors: int,
    timeouts: int,
    dropped: int,
    elapsed: float,
    client_cpu_s: float = float("nan"),
    error_kinds: dict[str, int] | None = None,
    server_cpu_s: float | None = None,
    ok_latencies_ms: np.ndarray | None = None,
) -> dict[str, Any]:
    """The printed row of one step. ``server_cpu_s``: CPU time (user + system) the server's
    processes used over the step, when known; shown per answered request. The latencies are
    of every answer (2xx or not); ``ok_latencies_ms`` (the 2xx answers only, when given) adds
    ``ok_rps``, ``ok_p50_ms`` and ``ok_p99_ms``: with checkout shedding load (503 at once),
    the answers that granted are told apart from the fast refusals."""
    lat = np.asarray(latencies_ms, dtype=np.float64)
    pct = np.percentile(lat, [50, 99, 99.9]) if len(lat) else [float("nan")] * 3
    ok = np.asarray(lat if ok_latencies_ms is None else ok_latencies_ms, dtype=np.float64)
    ok_pct = np.percentile(ok, [50, 99]) if len(ok) else [float("nan")] * 2
    return {
        "endpoint": kind,
        "target_rps": rate,
        "achieved_rps": round(len(lat) / elapsed, 1) if elapsed > 0 else float("nan"),
        "requests": len(lat),
        "p50_ms": round(float(pct[0]), 2),
        "p99_ms": round(float(pct[1]), 2),
        "p99_9_ms": round(float(pct[2]), 2),
        "errors": errors,
        "timeouts": timeouts,
        "dropped": dropped,
        "client_cpu_s": round(client_cpu_s, 2),
        "server_cpu_ms": (
            round(1000.0 * server_cpu_s / len(lat), 3)
            if server_cpu_s is not None and len(lat)
            else float("nan")
        ),
        "ok_rps": round(len(ok) / elapsed, 1) if elapsed > 0 else float("nan"),
        "ok_p50_ms": round(float(ok_pct[0]), 2),
        "ok_p99_ms": round(float(ok_pct[1]), 2),
        "load_avg": round(os.getloadavg()[0], 2),
        "error_kinds": dict(sorted((error_kinds or {}).items())),
    }


class ServerCpu:
    """CPU seconds (user + system) used so far by a server process and its children (uvicorn
    ``--workers`` processes), read with psutil; children that exited are no longer counted, so
    read it around steps during which the server keeps its processes."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.proc = psutil.Process(pid)

    def __call__(self) -> float:
        total = 0.0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except self._psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total


def with_healthz_ratio(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``cpu_x_healthz``: its server CPU per request over that of ``/healthz``
    (the trivial endpoint) at the same target rate in the same run (nan when unknown)."""
    trivial = {r["target_rps"]: r["server_cpu_ms"] for r in rows if r["endpoint"] == "trivial"}
    out = []
    for r in rows:
        base = trivial.get(r["target_rps"], float("nan"))
        ok = base == base and base > 0 and r["server_cpu_ms"] == r["server_cpu_ms"]
        out.append(
            {**r, "cpu_x_healthz": round(r["server_cpu_ms"] / base, 2) if ok else float("nan")}
        )
    return out


# -- orchestration -------------------------------------------------------------------------
class Workers:
    """``n`` generator processes sharing one fixed schedule (request i goes to process i % n)."""

    def __init__(self, n: int, host: str, port: int, concurrency: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        per = max(1, concurrency // n)
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, host, port, per), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def run(
        self,
        kind: str,
        rate: float,
        seconds: float,
        requests: list[bytes],
        *,
        timeout: float = 10.0,
        warm: int = 16,
        server_cpu: ServerCpu | None = None,
    ) -> dict[str, Any]:
        n_proc = len(self.pipes)
        total = int(rate * seconds)
        picks = np.random.default_rng(0).integers(0, len(requests), total).astype(np.int32)
        for pipe in self.pipes:  # every process up (spawned) with connections open
            pipe.send(("warm", warm))
        for pipe in self.pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("generator process did not get ready")
        # perf_counter is CLOCK_MONOTONIC: one clock for every process on the machine.
        start = time.perf_counter() + 0.1
        interval = n_proc / rate
        cpu0 = server_cpu() if server_cpu is not None else None
        for w, pipe in enumerate(self.pipes):
            share = picks[w::n_proc].tobytes()
            pipe.send(("step", requests, share, start + w / rate, interval, timeout))
        parts = [pipe.recv() for pipe in self.pipes]
        cpu = server_cpu() - cpu0 if server_cpu is not None and cpu0 is not None else None
        lat = np.concatenate([np.frombuffer(p[0], dtype=np.float64) for p in parts])
        return summarize(
            kind,
            rate,
            lat,
            errors=sum(p[1] for p in parts),
            timeouts=sum(p[2] for p in parts),
            dropped=sum(p[3] for p in parts),
            elapsed=max(p[4] for p in parts) - start,
            client_cpu_s=sum(p[5] for p in parts),
            error_kinds={
                k: sum(p[6].get(k, 0) for p in parts) for k in set().union(*(p[6] for p in parts))
            },
            server_cpu_s=cpu,
            ok_latencies_ms=np.concatenate([np.frombuffer(p[7], dtype=np.float64) for p in parts]),
        )

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _offers_command() -> list[str]:
    offers = Path(sys.executable).with_name("offers")
    return [str(offers)] if offers.exists() else [sys.executable, "-m", "offers.cli"]


def demo_env(home: Path) -> dict[str, str]:
    """Serving settings of a home trained by ``offers demo`` (as its ``serve_command``), or {}
    when ``home`` does not hold a demo."""
    catalog = home / "data" / "demo" / "catalog.yaml"
    if not catalog.exists():
        return {}
    root = str(Path(__file__).resolve().parents[1])
    if sys.path[0] != root:  # bench/features.py must not shadow the features package
        sys.path.insert(0, root)
    from offers.demo_pipeline import local_tracking_uri
    from serving.api.modelset import DEFAULT_MODELS

    return {
        "OFFERS_MODELS": json.dumps(DEFAULT_MODELS),
        "OFFERS_CATALOG": str(catalog),
        "OFFERS_MEMBER_FEATURES": str(home / "features" / "member_features.parquet"),
        "MLFLOW_TRACKING_URI": local_tracking_uri(home),
    }


def setup_demo(home: Path, members: int) -> None:
    """``offers demo --no-serve``: simulate, train and register into ``home`` (minutes)."""
    env = dict(os.environ, OFFERS_HOME=str(home))
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = [*_offers_command(), "demo", "--no-serve", "--members", str(members)]
    subprocess.run([*command, "--port", str(_free_port())], env=env, check=True)


def start_server(
    home: Path,
    key: str,
    port: int,
    wait: float = 180.0,
    workers: int = 1,
    database_url: str | None = None,
) -> subprocess.Popen:
    """``offers serve`` on 127.0.0.1:``port`` with ``OFFERS_HOME=home`` and a bench API key;
    returns once ``/readyz`` answers 200 (models loaded). Settings not in the environment come
    from the demo layout when ``home`` holds one (:func:`demo_env`). The store is
    ``database_url`` when given (else the environment's or the home's SQLite file), SQLite with
    ``synchronous=FULL`` unless the environment says otherwise."""
    env = dict(os.environ, OFFERS_HOME=str(home))
    if database_url:
        env["OFFERS_DATABASE_URL"] = database_url
    env.setdefault("OFFERS_SQLITE_SYNCHRONOUS", "FULL")
    if "OFFERS_MODELS" not in env:
        env.update({k: v for k, v in demo_env(home).items() if k not in env})
    env["OFFERS_API_KEYS"] = json.dumps({key: ["offers:read", "checkout:write"]})
    env.pop("OFFERS_API_KEYS_FILE", None)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = [*_offers_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    proc = subprocess.Popen([*command, "--log-level", "warning"], env=env)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"offers serve exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit(f"offers serve was not ready within {wait:.0f} s (see its log above)")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGINT (uvicorn's graceful shutdown: the lifespan drains), then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_durable_postgres(root: Path) -> tuple[str, Any]:
    """A durable PostgreSQL cluster under ``root`` (as ``bench/grants.py --postgres``: the test
    fixture's cluster with fsync left on). Returns its URL and a handle with ``stop()``."""
    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from tests.support.postgres import _bin_dir, _Cluster

    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise SystemExit("--postgres: PostgreSQL server binaries (initdb, pg_ctl) not found")
    cluster = _Cluster(bin_dir, root)
    cluster._run(str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", "offers",
                 "--auth=trust", "--encoding=UTF8")  # fmt: skip
    options = f"-h 127.0.0.1 -p {cluster.port} -k {root} -c max_connections=100"
    cluster._run(str(bin_dir / "pg_ctl"), "-D", str(cluster.data), "-l", str(root / "log"),
                 "-o", options, "-w", "start")  # fmt: skip
    return f"postgresql+psycopg://offers@127.0.0.1:{cluster.port}/postgres", cluster


def _members(path: Path, limit: int) -> list[str]:
    import pyarrow.parquet as pq

    ids = pq.read_table(path, columns=["member_id"]).column("member_id").to_pylist()
    return [str(m) for m in ids[:limit]]


def run(args: argparse.Namespace) -> list[dict]:
    """Every rate x endpoint step; prints one JSON line per step and returns the rows."""
    parsed = urlparse(args.url)
    host, port = parsed.hostname, parsed.port or 80
    members = _members(Path(args.features), args.members)
    rng = random.Random(1)
    sample = [members[rng.randrange(len(members))] for _ in range(min(POOL, len(members) * 4))]
    hostport = f"{host}:{port}"
    requests = {k: [request_for(k, m, hostport, args.key) for m in sample] for k in args.kinds}
    warmup(host, port, [requests[k][0] for k in args.kinds], args.key)
    workers = Workers(args.procs, host, port, args.concurrency)
    server_cpu = ServerCpu(args.server_pid) if args.server_pid else None
    rows = []
    try:
        for rate in args.rates:
            for kind in args.kinds:
                row = workers.run(kind, rate, args.seconds, requests[kind], server_cpu=server_cpu)
                if kind != "trivial":
                    row = with_healthz_ratio([*rows, row])[-1]
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        workers.close()
    return with_healthz_ratio(rows)


def warmup(host: str, port: int, samples: list[bytes], key: str, n: int = 20) -> None:
    """A few sequential requests per endpoint (first-call costs out of the measurement)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        parser = ResponseParser()
        for data in samples:
            for _ in range(n):
                sock.sendall(data)
                done: list = []
                while not done:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise SystemExit("warm-up: the server closed the connection")
                    done = parser.feed(chunk)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", help="API key with offers:read, checkout:write")
    parser.add_argument("--features", help="member feature snapshot (Parquet)")
    parser.add_argument("--rates", default="250,500,1000,1500")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="endpoints per rate, in order: trivial (/healthz), offers, checkout",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        help="server process (with its children) whose CPU time per request is reported "
        "(set by --start-server)",
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--members", type=int, default=100_000, help="member ids to draw from")
    parser.add_argument("--procs", type=int, default=1, help="generator processes (1-4)")
    parser.add_argument(
        "--start-server",
        action="store_true",
        help="launch `offers serve` on a free loopback port with OFFERS_HOME=--home and a "
        "generated key; stop it at the end",
    )
    parser.add_argument("--home", help="OFFERS_HOME of the started server (trained)")
    parser.add_argument(
        "--server-workers", type=int, default=1, help="with --start-server: offers serve --workers"
    )
    parser.add_argument(
        "--setup-demo",
        type=int,
        metavar="MEMBERS",
        help="with --start-server: first run `offers demo --no-serve --members MEMBERS` into "
        "--home (simulate, train, register)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="with --start-server: the store is a throwaway PostgreSQL cluster started for the "
        "run (durable: fsync and synchronous_commit on), else the home's SQLite file",
    )
    args = parser.parse_args(argv)
    host = urlparse(args.url).hostname
    if host not in LOOPBACK:
        parser.error(f"--url {args.url}: loopback only (got host {host!r})")
    args.rates = [float(r) for r in args.rates.split(",")]
    if max(args.rates) > MAX_RATE or min(args.rates) <= 0 or args.seconds > MAX_SECONDS:
        parser.error(f"bounded: 0 < rates <= {MAX_RATE}/s and --seconds <= {MAX_SECONDS}")
    if not 1 <= args.procs <= 4:
        parser.error(f"--procs {args.procs}: between 1 and 4")
    if not 1 <= args.server_workers <= 8:
        parser.error(f"--server-workers {args.server_workers}: between 1 and 8")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kinds or set(args.kinds) - set(KINDS):
        parser.error(f"--kinds {','.join(args.kinds)}: a list of {', '.join(KINDS)}")
    if args.postgres and not args.start_server:
        parser.error("--postgres needs --start-server (the bench starts the cluster)")
    server = None
    cluster: Any = None
    database_url: str | None = None
    if args.start_server:
        home = Path(args.home or os.environ.get("OFFERS_HOME", ""))
        if args.setup_demo and str(home):
            setup_demo(home, args.setup_demo)
        if not str(home) or not home.is_dir():
            parser.error(
                "--start-server needs --home (or OFFERS_HOME): a trained data home "
                "(or add --setup-demo MEMBERS)"
            )
        args.key = args.key or secrets.token_urlsafe(24)
        args.features = (
            args.features
            or os.environ.get("OFFERS_MEMBER_FEATURES")
            or demo_env(home).get("OFFERS_MEMBER_FEATURES")
            or str(home / "features" / "member_features.parquet")
        )
        port = _free_port()
        args.url = f"http://127.0.0.1:{port}"
        if args.postgres:
            cluster_dir = Path(tempfile.mkdtemp(prefix="offers-load-pg-"))
            database_url, cluster = start_durable_postgres(cluster_dir)
            print(f"store: PostgreSQL (durable, fsync on) in {cluster_dir}", file=sys.stderr)
        try:
            server = start_server(
                home, args.key, port, workers=args.server_workers, database_url=database_url
            )
        except BaseException:
            if cluster is not None:
                cluster.stop()
            raise
        args.server_pid = server.pid
    elif not args.key or not args.features:
        parser.error("--key and --features are required unless --start-server")
    print(f"event loop: {_install_uvloop()} x {args.procs} process(es)", file=sys.stderr)
    try:
        rows = run(args)
    finally:
        if server is not None:
            stop_server(server)
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
    cols = [c for c in rows[0] if c != "error_kinds"] if rows else []
    print(" ".join(f"{c:>12}" for c in cols))
    for row in rows:
        print(" ".join(f"{row[c]!s:>12}" for c in cols))


if __name__ == "__main__":
    main()
