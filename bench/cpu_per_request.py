"""Server CPU per request and latency, two code versions side by side on their own demo homes.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/cpu_per_request.py \\
        --side base=/work/base:/work/runs/home-base --side new=.:/work/runs/home-new \\
        [--rate 200] [--seconds 10] [--rounds 3]

Each ``--side NAME=REPO:HOME`` is a checkout of the project (its own ``bench/load.py`` and code,
run with ``PYTHONPATH=REPO``) and a home trained by that code's ``offers demo --no-serve``. Per
round and side (the sides alternate, so both see the same machine), ``offers serve`` (one
process) is started on the home, then that side's ``bench/load.py`` sends each endpoint
(``/healthz``, member offers, checkout) at ``--rate`` for ``--seconds``; the server process's CPU
time (psutil, user + system) is read when each step's result line arrives, so CPU per request
= CPU over the step / requests answered. Printed: per side and endpoint, the median over rounds
of CPU ms per request, p50 and p99 ms and errors, and the ratio of each side to the first side
and of each endpoint to ``/healthz`` in the same run. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

KINDS = ("trivial", "offers", "checkout")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(repo: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFERS_", "MLFLOW_"))}
    models = {
        "affinity": "models:/offers-affinity@champion",
        "uplift": "models:/offers-uplift@champion",
    }
    env.update(
        PYTHONPATH=str(repo),
        OPENBLAS_NUM_THREADS="1",
        OFFERS_HOME=str(home),
        OFFERS_API_KEYS_FILE=str(home / "api_keys.json"),
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        OFFERS_MODELS=json.dumps(models),
        OFFERS_CATALOG=str(home / "data" / "demo" / "catalog.yaml"),
        OFFERS_MEMBER_FEATURES=str(home / "features" / "member_features.parquet"),
    )
    return env


def _ready(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in {timeout:.0f} s")


def _cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_side(repo: Path, home: Path, rate: float, seconds: float) -> dict[str, dict[str, float]]:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = _env(repo, home)
    server = subprocess.Popen(
        [sys.executable, "-m", "offers", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _ready(url)
        proc = psutil.Process(server.pid)
        key = (home / "demo_api_key").read_text().strip()
        cmd = [sys.executable, str(repo / "bench" / "load.py"), "--url", url, "--key", key,
               "--features", env["OFFERS_MEMBER_FEATURES"], "--rates", f"{rate:g}",
               "--seconds", f"{seconds:g}"]  # fmt: skip
        load = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, text=True)
        out: dict[str, dict[str, float]] = {}
        last = _cpu(proc)
        assert load.stdout is not None
        for line in load.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            now = _cpu(proc)
            step = json.loads(line)
            kind = step.get("endpoint") or step.get("kind")
            answered = max(int(step.get("completed", step.get("requests", 0))), 1)
            out[str(kind)] = {
                "cpu_ms_per_request": 1000.0 * (now - last) / answered,
                "p50_ms": float(step.get("p50_ms", float("nan"))),
                "p99_ms": float(step.get("p99_ms", float("nan"))),
                "errors": float(step.get("errors", 0)),
                "answered": float(answered),
            }
            last = now
        load.wait(600)
        return out
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", action="append", required=True, help="NAME=REPO:HOME")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sides = []
    for spec in args.side:
        name, rest = spec.split("=", 1)
        repo, home = rest.split(":", 1)
        sides.append((name, Path(repo).resolve(), Path(home).resolve()))
    runs: dict[str, list[dict[str, dict[str, float]]]] = {n: [] for n, _r, _h in sides}
    for r in range(args.rounds):
        for name, repo, home in sides:
            runs[name].append(run_side(repo, home, args.rate, args.seconds))
            print(f"round {r + 1} {name}: " + json.dumps(runs[name][-1]), flush=True)
    first = sides[0][0]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, steps in runs.items():
        summary[name] = {}
        for kind in KINDS:
            vals = [s[kind] for s in steps if kind in s]
            if not vals:
                continue
            med = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
            summary[name][kind] = med
    for name, per_kind in summary.items():
        for kind, med in per_kind.items():
            base = summary[first].get(kind, {}).get("cpu_ms_per_request")
            trivial = per_kind.get("trivial", {}).get("cpu_ms_per_request")
            print(
                f"{name:8s} {kind:9s} cpu/request {med['cpu_ms_per_request']:.3f} ms "
                f"(x{med['cpu_ms_per_request'] / base:.2f} vs {first}; "
                f"x{med['cpu_ms_per_request'] / trivial:.2f} vs /healthz)  "
                f"p50 {med['p50_ms']:.2f} ms  p99 {med['p99_ms']:.2f} ms  "
                f"errors {med['errors']:.0f}"
                if base and trivial
                else f"{name} {kind} {med}"
            )
    print(json.dumps({"rounds": args.rounds, "rate": args.rate, "summary": summary}))


if __name__ == "__main__":
    main()
