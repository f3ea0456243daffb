"""Checkout grant reservations: one commit per reservation (worker threads) vs group commit.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/grants.py [--url sqlite:///...|postgresql://...]
        [--runs 3] [--seconds 3] [--concurrency 1,64] [--rates 500,1000] [--items 1] [--sessions]

Each grant reserves ``--items`` offer budgets (amount 1 on a budget that never runs out) for a
new member. ``single`` is today's route: each grant in an anyio worker thread (40 threads),
each reservation its own transaction and commit (``OffersStore.reserve_budget``). ``grouped``
is :class:`serving.api.grants.GrantService`: one writer, one commit per group of waiting
grants. Loads: closed loop (``--concurrency`` clients, each sending its next grant when the
last one answered: the throughput ceiling) and open loop (``--rates`` grants/s on a fixed
schedule, latency from the scheduled time: what checkout sees at that rate). ``--sessions``
makes each grouped grant what a checkout commits now (a session row, grant rows, two cap
counters per reward besides the budget). The default store
is a fresh SQLite file in WAL mode with synchronous=FULL (an fsync per commit). Prints one JSON
line per run and the medians over ``--runs`` with the grouped/single ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path and bench/features.py would shadow the
# features package: put the repository root first.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
from anyio import to_thread  # noqa: E402

from serving.api.grants import GrantService  # noqa: E402
from serving.store import (  # noqa: E402
    CapKey,
    GrantRequest,
    OffersStore,
    ReservationItem,
    SessionRecord,
    open_store,
)

OFFERS = ("o1", "o2", "o3", "o4")


def _single(store: OffersStore, items: list[ReservationItem]) -> None:
    for item in items:  # what routes.decisions._grant does: one transaction per reservation
        store.reserve_budget(item.offer_id, item.amount)


def _items(n: int) -> list[ReservationItem]:
    return [ReservationItem(OFFERS[i % len(OFFERS)], amount=1.0) for i in range(n)]


_SEQ = itertools.count()


def _checkout(items: list[ReservationItem]) -> GrantRequest:
    """What a checkout commits since sessions: a new session row, one grant row per reward and,
    per reward, its lifetime per-member cap and the channel frequency cap besides the budget."""
    n = next(_SEQ)
    member = f"m{n}"
    freq = CapKey(member, "channel:checkout", "7d-2946", 1_000_000)
    with_caps = tuple(
        ReservationItem(i.offer_id, amount=i.amount,
                        caps=(CapKey(member, f"offer:{i.offer_id}", "all", 1_000_000), freq))
        for i in items
    )  # fmt: skip
    rewards = [{"offer_id": i.offer_id} for i in items]
    session = SessionRecord(
        f"bench-{n}", member, f"d-{n}", "checkout", {"rewards": rewards},
        valid_until=(None,) * len(items), surprise=(False,) * len(items),
    )  # fmt: skip
    return GrantRequest(with_caps, session)


SESSIONS = False  # --sessions


async def _one(mode: str, store: OffersStore, service: GrantService, items) -> None:
    if mode == "single":
        await to_thread.run_sync(_single, store, items)
    else:
        outcome = await service.reserve(_checkout(items) if SESSIONS else items)
        assert len(outcome.granted) == len(items), outcome


async def closed_loop(mode, store, service, items, concurrency: int, seconds: float) -> list:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await _one(mode, store, service, items)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


async def open_loop(mode, store, service, items, rate: float, seconds: float) -> list:
    latencies: list[float] = []
    start = time.perf_counter() + 0.01
    tasks = []

    async def one(due: float) -> None:
        await _one(mode, store, service, items)
        latencies.append(time.perf_counter() - due)

    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    return latencies


async def busy_loop(share: float) -> None:
    """Keep the event loop busy ``share`` of the time in 1 ms slices of pure-Python work (as
    request handling does in the server), competing with the writer thread for the GIL."""
    while True:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.001 * share:
            pass
        await asyncio.sleep(0.001 * (1 - share))


async def measure(
    store, mode: str, load: str, level: float, items: int, seconds: float, busy: float = 0.0
) -> dict:
    service = GrantService(store)
    plan = _items(items)
    commits0 = 0
    spinner = asyncio.ensure_future(busy_loop(busy)) if busy > 0 else None
    try:
        t0 = time.perf_counter()
        if load == "closed":
            lat = await closed_loop(mode, store, service, plan, int(level), seconds)
        else:
            lat = await open_loop(mode, store, service, plan, level, seconds)
        elapsed = time.perf_counter() - t0
        commits = service.stats.commits - commits0 if mode == "grouped" else len(lat) * items
    finally:
        if spinner is not None:
            spinner.cancel()
        service.close()
    ms = np.asarray(lat) * 1000.0
    return {
        "mode": mode,
        "load": load,
        "level": level,
        "grants": len(lat),
        "grants_per_s": round(len(lat) / elapsed, 1),
        "commits_per_s": round(commits / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def start_durable_postgres(root: Path) -> tuple[str, Any]:
    """A PostgreSQL cluster like ``tests/support/postgres.py`` starts, but durable
    (the fixture turns fsync off for speed). Returns its URL and a handle with ``stop()``."""
    from tests.support.postgres import _bin_dir, _Cluster

    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise SystemExit("--postgres: PostgreSQL server binaries (initdb, pg_ctl) not found")
    cluster = _Cluster(bin_dir, root)  # root: a directory of its own (chowned under root)
    cluster._run(str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", "offers",
                 "--auth=trust", "--encoding=UTF8")  # fmt: skip
    options = f"-h 127.0.0.1 -p {cluster.port} -k {root} -c max_connections=100"
    cluster._run(str(bin_dir / "pg_ctl"), "-D", str(cluster.data), "-l", str(root / "log"),
                 "-o", options, "-w", "start")  # fmt: skip
    return f"postgresql+psycopg://offers@127.0.0.1:{cluster.port}/postgres", cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="store URL (default: a fresh SQLite file, synchronous=FULL)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="start a throwaway PostgreSQL cluster on loopback with fsync and synchronous_commit "
        "on (the test fixture's binaries and user handling) and use it",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--rates", default="500,1000")
    parser.add_argument("--items", type=int, default=1, help="reservations per grant")
    parser.add_argument(
        "--sessions",
        action="store_true",
        help="grouped grants as checkout commits them: a session row, grant rows and two cap "
        "counters (per-member, channel frequency) per reward besides the budget",
    )
    parser.add_argument(
        "--busy",
        type=float,
        default=0.0,
        help="share of the event loop's time spent in pure-Python work (0-0.9), as in a loaded "
        "server: the writer thread then competes for the GIL",
    )
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval (s; Python's default 0.005)"
    )
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="SQLite: FULL fsyncs every commit (the serving default); NORMAL in WAL mode "
        "survives a process crash, not a machine crash",
    )
    args = parser.parse_args()
    global SESSIONS
    SESSIONS = args.sessions
    if args.seconds > 30 or args.runs > 10:
        parser.error("bounded: --seconds <= 30 and --runs <= 10")
    if not 0 <= args.busy <= 0.9:
        parser.error(f"--busy {args.busy}: between 0 and 0.9")
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    tmp = tempfile.TemporaryDirectory(prefix="grants-bench-")
    cluster = None
    url = args.url or f"sqlite:///{Path(tmp.name) / 'offers.db'}"
    steps = [("closed", float(c)) for c in args.concurrency.split(",") if c] + [
        ("open", float(r)) for r in args.rates.split(",") if r
    ]
    rows: list[dict] = []
    try:
        if args.postgres:
            root = Path(tempfile.mkdtemp(prefix="grants-bench-pg-"))
            url, cluster = start_durable_postgres(root)
        extra = {"sqlite_synchronous": args.synchronous} if url.startswith("sqlite") else {}
        store = open_store(url, pool_size=45, **extra)
        try:
            for offer_id in OFFERS:
                store.set_budget(offer_id, 1e12, unit="count")
            for _ in range(args.runs):
                for load, level in steps:
                    for mode in ("single", "grouped"):
                        row = asyncio.run(
                            measure(store, mode, load, level, args.items, args.seconds, args.busy)
                        )
                        print(json.dumps(row), flush=True)
                        rows.append(row)
        finally:
            store.close()
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
        tmp.cleanup()
    sync = f" synchronous={args.synchronous}" if extra else ""
    sync += ", grouped with sessions and caps" if args.sessions else ""
    print(
        f"\nmedian of {args.runs} runs ({store.dialect}{sync}, {args.items} reservation(s)/grant)"
    )
    print(f"{'load':>6} {'level':>6} {'mode':>8} {'grants/s':>9} {'commits/s':>9} "
          f"{'p50 ms':>8} {'p99 ms':>8}")  # fmt: skip
    for load, level in steps:
        med = {}
        for mode in ("single", "grouped"):
            sel = [r for r in rows if (r["load"], r["level"], r["mode"]) == (load, level, mode)]
            med[mode] = {
                k: statistics.median(r[k] for r in sel)
                for k in ("grants_per_s", "commits_per_s", "p50_ms", "p99_ms")
            }
            m = med[mode]
            print(f"{load:>6} {level:>6.0f} {mode:>8} {m['grants_per_s']:>9.0f} "
                  f"{m['commits_per_s']:>9.0f} {m['p50_ms']:>8.2f} "
                  f"{m['p99_ms']:>8.2f}")  # fmt: skip
        s, g = med["single"], med["grouped"]
        print(f"{'':>6} {'':>6} {'ratio':>8} {g['grants_per_s'] / s['grants_per_s']:>9.2f} "
              f"{g['commits_per_s'] / s['commits_per_s']:>9.2f} "
              f"{g['p50_ms'] / s['p50_ms']:>8.2f} {g['p99_ms'] / s['p99_ms']:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
