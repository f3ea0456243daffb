"""Server memory through a large chunked upload to ``POST /v1/events`` (issue 17 item 6).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/chunked_upload.py [--mb 1000] [--repo .]

Starts ``serving.api.app.run_server`` from ``--repo`` (a checkout of any commit; no models, a
SQLite store in a temporary home, one key with ``events:write``) on a free loopback port, then
sends ``--mb`` MB of chunked body twice, without a key and with the key, over a raw socket. For
each it prints how much the client could send before the server closed, the answer's status
line, the time to it, and the server's RSS (``/proc/<pid>/status``) before, at its peak
(sampled every 50 ms) and one second after. Bounded to loopback and at most 4,000 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

log = logging.getLogger("chunked_upload")
MB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _start(repo: Path, home: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {
        **os.environ,
        "OFFERS_HOME": str(home),
        "OFFERS_PORT": str(port),
        "OFFERS_MODELS": "{}",
        "OFFERS_API_KEYS": json.dumps({"writer": ["events:write"]}),
        "OPENBLAS_NUM_THREADS": "1",
    }
    env.pop("OFFERS_DATABASE_URL", None)
    code = "from serving.api.app import run_server; run_server(log_level='warning')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=repo, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("server not ready in 60 s")


def upload(pid: int, port: int, size_mb: int, key: str | None) -> str:
    """One chunked upload; a line with what was sent, the answer and the server's RSS."""
    before = _rss_mb(pid)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    head = ["POST /v1/events HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked",
            "Content-Type: application/json", *([f"X-API-Key: {key}"] if key else [])]  # fmt: skip
    block = b"%x\r\n" % MB + b"7" * MB + b"\r\n"
    sent = 0
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            while sent < size_mb * MB:
                sock.sendall(block)
                sent += MB
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(4096).split(b"\r\n", 1)[0].decode()
        except (ConnectionResetError, TimeoutError) as exc:
            answer = type(exc).__name__
    elapsed = time.monotonic() - start
    time.sleep(1.0)
    stop.set()
    sampler.join()
    return (
        f"key={key or '-'}: sent {sent // MB} MB, answer {answer!r} after {elapsed:.1f} s; "
        f"server RSS before {before:.0f} MB, peak {peak[0]:.0f} MB, after {_rss_mb(pid):.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000, help="upload size in MB (max 4000)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="checkout to serve")
    args = parser.parse_args()
    if not 1 <= args.mb <= 4000:
        parser.error(f"--mb {args.mb} is not in 1..4000")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as home:
        proc, port = _start(args.repo.resolve(), Path(home))
        try:
            for key in (None, "writer"):
                log.info(upload(proc.pid, port, args.mb, key))
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
