"""Benchmark of the feature pipeline: wall time and peak memory per engine and size.

Simulates each program once (cached under /tmp/offers-bench/, reused by later runs), then runs
every measurement in its own subprocess so peak memory is that measurement's alone. A
measurement is what ``offers features`` does: open the data directory, resolve the category
list, compute every member feature as of the end of the data and stream them to Parquet.
Peak memory is the largest resident set of the measuring process tree (Python + DuckDB
threads, or Python + the Spark JVM), sampled every 0.1 s, and the Python process's ru_maxrss.
Also measures the single-member online path (median / p95 per call). Prints one JSON line per
measurement; asserts nothing.

    .venv/bin/python bench/features.py                    # DuckDB 100k + 1M, Spark 100k, online
    .venv/bin/python bench/features.py --duckdb 100000 --spark --online 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("OFFERS_BENCH_CACHE", "/tmp/offers-bench"))
AS_OF = "2026-10-31"  # the simulator's default observation end: all history is visible


def data_dir(n: int, seed: int) -> Path:
    """The simulated program of ``n`` members (simulated on first use)."""
    out = CACHE / f"sim-{n}-seed{seed}"
    if (out / "DONE").exists():
        return out
    sys.path.insert(0, str(REPO))
    from features.sim.simulate import simulate

    t0 = time.perf_counter()
    simulate(n_members=n, seed=seed).write(out)
    (out / "DONE").write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return out


class PeakRSS:
    """Samples the resident memory of this process and all its descendants."""

    def __init__(self, every_s: float = 0.1) -> None:
        import psutil

        self._proc = psutil.Process()
        self._every = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # a child that just exited
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self._every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = max(self.peak, self._sample())
        self._stop.set()
        self._thread.join()


def _child_batch(engine: str, n: int, seed: int) -> dict:
    sys.path.insert(0, str(REPO))
    from features.pipeline import load_tables, member_features, resolve_categories
    from features.pipeline.config import FeatureConfig
    from features.pipeline.engines import connect
    from features.pipeline.output import write_features

    src = data_dir(n, seed)
    out = CACHE / f"features-{engine}-{n}.parquet"
    result: dict = {"engine": engine, "members": n}
    if engine == "duckdb":
        result["memory_limit"] = os.environ.get("OFFERS_BENCH_DUCKDB_MEMORY", "default")
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        if engine == "spark":
            con = connect(engine, master="local[2]")
        else:
            con = connect(engine, memory_limit=os.environ.get("OFFERS_BENCH_DUCKDB_MEMORY"))
        t1 = time.perf_counter()
        tables = load_tables(src, con)
        config = resolve_categories(tables, FeatureConfig(), before=AS_OF)
        t2 = time.perf_counter()
        summary = write_features(member_features(tables, AS_OF, config), out)
        t3 = time.perf_counter()
    import pyarrow.parquet as pq

    meta = {
        t: pq.read_metadata(src / f"{t}.parquet").num_rows
        for t in ("members", "transactions", "offer_events")
    }
    result.update(
        rows_in=meta,
        rows_out=summary.rows,
        columns_out=len(summary.types),
        connect_s=round(t1 - t0, 2),
        categories_s=round(t2 - t1, 2),
        features_s=round(t3 - t2, 2),
        total_s=round(t3 - t0, 2),
        peak_tree_gib=round(rss.peak / 2**30, 2),
        peak_python_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    )
    return result


def _child_online(n: int, seed: int, members: int) -> dict:
    sys.path.insert(0, str(REPO))
    import numpy as np
    import pandas as pd

    from features.pipeline import load_tables, resolve_categories
    from features.pipeline.config import FeatureConfig
    from features.pipeline.online import OnlineFeatures

    src = data_dir(n, seed)
    config = resolve_categories(load_tables(src), FeatureConfig(), before=AS_OF)
    ids = pd.read_parquet(src / "members.parquet", columns=["member_id"])["member_id"]
    sample = ids.sample(n=members, random_state=0).tolist()
    frames = {
        t: pd.read_parquet(src / f"{t}.parquet", filters=[("member_id", "in", sample)])
        for t in ("members", "transactions", "offer_events")
    }
    groups = {t: dict(tuple(df.groupby("member_id"))) for t, df in frames.items()}
    empty = {t: df.iloc[:0] for t, df in frames.items()}
    online = OnlineFeatures(config, pd.read_parquet(src / "offers.parquet"))
    basket = pd.DataFrame({"amount": [12.5, 30.0], "category": ["grocery", "coffee"]})
    times = []
    for m in sample:
        rows = [groups[t].get(m, empty[t]) for t in ("members", "transactions", "offer_events")]
        t0 = time.perf_counter()
        online.compute(*rows, AS_OF, basket=basket)
        times.append((time.perf_counter() - t0) * 1000)
    lines = [len(groups["transactions"].get(m, empty["transactions"])) for m in sample]
    return {
        "engine": "online-duckdb",
        "members": members,
        "lines_per_member_median": float(np.median(lines)),
        "first_call_ms": round(times[0], 1),
        "median_ms": round(float(np.median(times[1:])), 1),
        "p95_ms": round(float(np.percentile(times[1:], 95)), 1),
    }


def _run_child(args: list[str]) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        return {"args": args, "error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duckdb", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--spark", type=int, nargs="*", default=[100_000])
    ap.add_argument("--online", type=int, default=200, help="members for the online timing")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, n, extra = args.child[0], int(args.child[1]), args.child[2]
        if kind == "online":
            print(json.dumps(_child_online(n, args.seed, int(extra))))
        else:
            print(json.dumps(_child_batch(kind, n, args.seed)))
        return
    for n in sorted({*args.duckdb, *args.spark}):
        t0 = time.perf_counter()
        cached = (CACHE / f"sim-{n}-seed{args.seed}" / "DONE").exists()
        data_dir(n, args.seed)
        print(
            json.dumps(
                {"data": n, "cached": cached, "simulate_s": round(time.perf_counter() - t0, 1)}
            ),
            flush=True,
        )
    for n in args.duckdb:
        print(json.dumps(_run_child(["--child", "duckdb", str(n), "-"])), flush=True)
    for n in args.spark:
        print(json.dumps(_run_child(["--child", "spark", str(n), "-"])), flush=True)
    if args.online:
        n = min([*args.duckdb, *args.spark] or [100_000])
        print(json.dumps(_run_child(["--child", "online", str(n), str(args.online)])), flush=True)


if __name__ == "__main__":
    main()
