"""bench/load.py: response framing, the open-loop generator against a real local HTTP server,
and the printed statistics."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # spawned generator processes import it by this name too
import load  # noqa: E402


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        if self.path.startswith("/drop"):  # hang up without an answer
            self.close_connection = True
            return
        status = 503 if self.path.startswith("/fail") else 200
        body = b'{"ok":true,"echo":' + str(len(body_in)).encode() + b"}"
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.wfile.write(head.encode() + body)  # one write: no Nagle/delayed-ACK stall

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # aborted (timed-out) connections
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_parser_frames_split_pipelined_and_chunked_responses():
    p = load.ResponseParser()
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-type: x\r\n\r\nhello"
    assert p.feed(one[:20]) == []
    assert p.feed(one[20:-2]) == []
    assert p.feed(one[-2:]) == [(200, True)]
    two = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    close = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno"
    assert p.feed(two + chunked + close) == [(404, True), (200, True), (503, False)]
    assert p.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") == [(200, False)]
    with pytest.raises(ValueError, match="bad status line"):
        load.ResponseParser().feed(b"SPDY/3 200 OK\r\n\r\n")


def test_encoded_requests_carry_key_and_body_length():
    data = load.request_for("checkout", "M1", "127.0.0.1:8000", "secret")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/checkout/rewards HTTP/1.1\r\n")
    assert b"X-API-Key: secret" in head
    assert f"Content-Length: {len(body)}".encode() in head and b'"member_id": "M1"' in body
    assert load.request_for("offers", "M7", "h:1", "k").startswith(b"GET /v1/members/M7/offers?")


def test_every_checkout_sent_is_a_new_transaction_of_the_same_length():
    data = load.request_for("checkout", "M1", "127.0.0.1:8000", "secret")
    sent = load.fresh_transactions([data, data, b"GET /healthz"])
    assert len({sent[0], sent[1]}) == 2 and sent[2] == b"GET /healthz"
    assert all(len(x) == len(data) and load.TID_MARK not in x for x in sent[:2])
    body = json.loads(sent[0].partition(b"\r\n\r\n")[2])
    assert body["transaction_id"].startswith("load-") and len(body["transaction_id"]) == 21


def test_generator_counts_answers_errors_timeouts_and_drops(server):
    host, port = server
    ok = load.encode_request("GET", "/ok", f"{host}:{port}", "k", None)
    post = load.encode_request("POST", "/ok", f"{host}:{port}", "k", b'{"a":1}')
    fail = load.encode_request("GET", "/fail", f"{host}:{port}", "k", None)
    slow = load.encode_request("GET", "/slow", f"{host}:{port}", "k", None)

    async def main() -> tuple[load.StepCounts, load.StepCounts, int]:
        gen = load.Generator(host, port, concurrency=16, timeout=5.0)
        await gen.warm(2)
        first = await gen.step([ok, post, fail] * 10, time.perf_counter() + 0.01, 0.002)
        opened = gen.open
        gen.timeout, gen.concurrency = 0.3, 4
        # 4 slow requests occupy all 4 connections and time out; 3 more find none: dropped.
        second = await gen.step([slow] * 4 + [ok] * 3, time.perf_counter() + 0.01, 0.001)
        return first, second, opened

    first, second, opened = asyncio.run(main())
    assert len(first.latencies_ms) == 30 and first.errors == 10 and first.dropped == 0
    assert first.kinds == {"503": 10}
    assert len(first.ok_ms) == 20  # the 2xx answers alone
    assert first.timeouts == 0 and min(first.latencies_ms) > 0
    assert opened < 30  # keep-alive: connections were reused
    assert second.timeouts == 4 and second.errors == 4 and second.dropped == 3
    assert second.kinds == {"timeout": 4}
    assert second.latencies_ms == []


def test_a_connection_closed_without_an_answer_is_a_broken_error(server):
    host, port = server
    ok = load.encode_request("GET", "/ok", f"{host}:{port}", "k", None)
    drop = load.encode_request("GET", "/drop", f"{host}:{port}", "k", None)

    async def main() -> load.StepCounts:
        gen = load.Generator(host, port, concurrency=8, timeout=5.0)
        return await gen.step([ok, drop, ok, drop, ok], time.perf_counter() + 0.01, 0.005)

    counts = asyncio.run(main())
    assert len(counts.latencies_ms) == 3 and counts.kinds == {"broken": 2}
    assert counts.errors == 2 and counts.timeouts == 0


def test_connections_idle_too_long_are_replaced_not_reused(server, monkeypatch):
    host, port = server
    ok = load.encode_request("GET", "/ok", f"{host}:{port}", "k", None)
    monkeypatch.setattr(load, "IDLE_MAX", 0.2)

    async def main() -> tuple[int, int, load.StepCounts]:
        gen = load.Generator(host, port, concurrency=8, timeout=5.0)
        await gen.warm(3)
        stale = list(gen.idle)
        await asyncio.sleep(0.3)
        await gen.warm(3)  # the three stale ones closed, three new ones opened
        fresh, still_open = list(gen.idle), gen.open
        counts = await gen.step([ok] * 4, time.perf_counter() + 0.01, 0.005)
        return len(set(stale) & set(fresh)), still_open, counts

    shared, still_open, counts = asyncio.run(main())
    assert shared == 0 and still_open == 3
    assert len(counts.latencies_ms) == 4 and counts.errors == 0


def test_summary_percentiles_rate_and_counts():
    row = load.summarize(
        "offers",
        100.0,
        np.arange(1, 101, dtype=float),
        errors=2,
        timeouts=1,
        dropped=3,
        elapsed=2.0,
        error_kinds={"timeout": 1, "503": 1},
    )
    assert row["p50_ms"] == 50.5 and row["p99_ms"] == 99.01 and row["p99_9_ms"] == 99.9
    assert row["achieved_rps"] == 50.0 and row["requests"] == 100
    assert (row["errors"], row["timeouts"], row["dropped"]) == (2, 1, 3)
    assert row["error_kinds"] == {"503": 1, "timeout": 1}
    assert (row["ok_rps"], row["ok_p50_ms"]) == (50.0, 50.5)  # no split given: all answers
    split = load.summarize(
        "checkout",
        100.0,
        np.arange(1, 101, dtype=float),
        errors=60,
        timeouts=0,
        dropped=0,
        elapsed=2.0,
        ok_latencies_ms=np.arange(61, 101, dtype=float),
    )
    assert split["achieved_rps"] == 50.0 and split["p50_ms"] == 50.5
    assert split["ok_rps"] == 20.0 and split["ok_p50_ms"] == 80.5
    assert split["ok_p99_ms"] == pytest.approx(99.61)
    empty = load.summarize("x", 1.0, np.array([]), errors=0, timeouts=0, dropped=0, elapsed=1.0)
    assert np.isnan(empty["p99_ms"]) and empty["requests"] == 0


def test_two_generator_processes_share_one_schedule(server):
    host, port = server
    pool = [load.encode_request("GET", f"/ok/{i}", f"{host}:{port}", "k", None) for i in range(8)]
    workers = load.Workers(2, host, port, concurrency=64)
    try:
        row = workers.run("trivial", 200.0, 0.5, pool)
    finally:
        workers.close()
    assert row["requests"] == 100 and row["errors"] == 0 and row["dropped"] == 0, str(row)
    assert row["error_kinds"] == {}
    assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["p99_9_ms"]


def test_cli_refuses_non_loopback_and_unbounded_runs(capsys):
    with pytest.raises(SystemExit):
        load.main(["--url", "http://10.0.0.1:8000", "--key", "k", "--features", "f"])
    assert "loopback only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load.main(["--key", "k", "--features", "f", "--rates", "9000"])
    assert "bounded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load.main(["--start-server", "--home", "/nonexistent/offers-home"])
    assert "trained data home" in capsys.readouterr().err


def test_server_cpu_per_request_and_its_ratio_to_healthz_at_the_same_rate():
    def row(kind, rate, cpu_s, n=100):
        lat = np.ones(n)
        return load.summarize(
            kind, rate, lat, errors=0, timeouts=0, dropped=0, elapsed=1.0, server_cpu_s=cpu_s
        )

    rows = load.with_healthz_ratio(
        [row("trivial", 250.0, 0.02), row("checkout", 250.0, 0.1), row("checkout", 500.0, 0.1)]
    )
    assert [r["server_cpu_ms"] for r in rows] == [0.2, 1.0, 1.0]
    assert rows[0]["cpu_x_healthz"] == 1.0 and rows[1]["cpu_x_healthz"] == 5.0
    assert np.isnan(rows[2]["cpu_x_healthz"])  # no /healthz step at 500/s in this run
    unknown = load.summarize("x", 1.0, np.ones(3), errors=0, timeouts=0, dropped=0, elapsed=1.0)
    assert np.isnan(unknown["server_cpu_ms"]) and unknown["load_avg"] >= 0


def test_server_cpu_counts_the_worker_children():
    import subprocess

    import psutil

    # a parent that only waits on a child that spends 0.4 s of CPU and then idles (a uvicorn
    # --workers parent and its worker)
    child = (
        "import time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.4: pass\ntime.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])",
        ]
    )
    try:
        clock = load.ServerCpu(parent.pid)
        deadline = time.monotonic() + 30
        seen = clock()
        while seen < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = clock()
        own = psutil.Process(parent.pid).cpu_times()
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait(30)
    assert seen >= 0.4 > own.user + own.system  # the child's CPU, counted with the parent's


def test_cli_refuses_unknown_kinds_and_postgres_without_a_started_server(capsys):
    with pytest.raises(SystemExit):
        load.main(["--key", "k", "--features", "f", "--kinds", "checkout,nope"])
    assert "--kinds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load.main(["--key", "k", "--features", "f", "--postgres"])
    assert "--postgres needs --start-server" in capsys.readouterr().err
