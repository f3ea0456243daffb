"""Load test of the serving API on loopback: latency percentiles and errors per endpoint and rate.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/load.py --url http://127.0.0.1:8000 \\
        --key KEY --features $OFFERS_HOME/features/member_features.parquet \\
        [--rates 250,500,1000,2000] [--seconds 30] [--concurrency 256]

For each rate and each endpoint (``GET /healthz`` as the trivial FastAPI endpoint,
``GET /v1/members/{id}/offers``, ``POST /v1/checkout/rewards``) it sends requests open-loop
(on a fixed schedule, whether earlier ones have answered or not; at most ``--concurrency`` in
flight, the rest counted as ``dropped``) for ``--seconds`` and prints p50/p99/p99.9 latency in
ms, the achieved rate and the error count (non-2xx, timeouts). Bounded: loopback URLs only, at
most 5,000 requests/s and 120 s per step. Latency is measured from the scheduled send time, so
a client that falls behind shows up as latency, not as a lower rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import pandas as pd

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_RATE = 5_000
MAX_SECONDS = 120


def _request(kind: str, member: str) -> tuple[str, str, dict | None]:
    if kind == "trivial":
        return "GET", "/healthz", None
    if kind == "offers":
        return "GET", f"/v1/members/{member}/offers?channel=app&k=3", None
    basket = [{"category": "grocery", "quantity": 2, "unit_price": 15.0}]
    return "POST", "/v1/checkout/rewards", {"member_id": member, "basket": basket, "total": 30.0}


async def run_step(
    client: httpx.AsyncClient,
    kind: str,
    rate: float,
    seconds: float,
    members: list[str],
    concurrency: int,
) -> dict[str, float]:
    """Open-loop load of one endpoint at one rate; returns the step's figures."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = dropped = 0
    gate = asyncio.Semaphore(concurrency)
    rng = random.Random(0)
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i / rate
        method, path, body = _request(kind, rng.choice(members))
        try:
            response = await client.request(method, path, json=body)
            if response.status_code >= 300:
                errors += 1
        except httpx.HTTPError:
            errors += 1
        finally:
            gate.release()
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if gate.locked():
            dropped += 1
            continue
        await gate.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000.0
    pct = np.percentile(lat, [50, 99, 99.9]) if len(lat) else [np.nan] * 3
    return {
        "endpoint": kind,
        "target_rps": rate,
        "achieved_rps": round(len(lat) / elapsed, 1),
        "requests": len(lat),
        "p50_ms": round(float(pct[0]), 2),
        "p99_ms": round(float(pct[1]), 2),
        "p99_9_ms": round(float(pct[2]), 2),
        "errors": errors,
        "dropped": dropped,
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, float]]:
    members = pd.read_parquet(args.features, columns=["member_id"])["member_id"].astype(str)
    members = members.tolist()[: args.members]
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    headers = {"X-API-Key": args.key}
    results = []
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=10.0
    ) as client:
        for kind in ("trivial", "offers", "checkout"):  # warm-up
            for _ in range(20):
                method, path, body = _request(kind, members[0])
                await client.request(method, path, json=body)
        for rate in args.rates:
            for kind in ("trivial", "offers", "checkout"):
                row = await run_step(client, kind, rate, args.seconds, members, args.concurrency)
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="API key with offers:read, checkout:write")
    parser.add_argument("--features", required=True, help="member feature snapshot (Parquet)")
    parser.add_argument("--rates", default="250,500,1000,2000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--members", type=int, default=100_000, help="member ids to draw from")
    args = parser.parse_args()
    host = urlparse(args.url).hostname
    if host not in LOOPBACK:
        parser.error(f"--url {args.url}: loopback only (got host {host!r})")
    args.rates = [float(r) for r in args.rates.split(",")]
    if max(args.rates) > MAX_RATE or args.seconds > MAX_SECONDS:
        parser.error(f"bounded: rates <= {MAX_RATE}/s and --seconds <= {MAX_SECONDS}")
    results = asyncio.run(main_async(args))
    table = pd.DataFrame(results).set_index(["target_rps", "endpoint"])
    print(table.to_string())


if __name__ == "__main__":
    main()
