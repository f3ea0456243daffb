"""Affinity benchmark: training time and peak memory for N simulated members (default 1M), and
batch ranking throughput (members per second) for the top 10 among 50 eligible offers.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/affinity.py [--members 1000000] [--threads 2]

The simulated program uses the example catalog with its offers duplicated (``<id>-b``) so that
there are more than 50 offers to choose from. Simulation runs first in its own process (timed,
not part of the training figures). Training runs in a fresh child process so its peak RSS is
its own: read the columns the confidence matrix needs from the simulator's canonical Parquet
files (no re-validation: the simulator writes valid tables and ``offers validate`` is its own
step), build the confidence matrix (offers + categories), compute segments (tier x lifecycle
stage: the feature pipeline on DuckDB over the same files), fit ALS, build the shipped blend.
Ranking: 50 random eligible offers per member (a per-member mask), top 10, in batches of 4,096,
for the blend and for ALS; plus ALS through implicit's ``recommend(items=...)`` with one shared
set of 50 offers. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


COLUMNS = {
    "offers": ["offer_id"],
    "offer_events": ["member_id", "offer_id", "event", "ts"],
    "transactions": ["member_id", "transaction_id", "category", "amount", "quantity", "ts"],
}


def _catalog(out: Path) -> Path:
    """The example catalog with every offer duplicated, so there are more than 50 offers."""
    from features.catalog.model import default_catalog_path, dump_catalog, load_catalog

    cat = load_catalog(default_catalog_path())
    copies = [o.model_copy(update={"offer_id": f"{o.offer_id}-b"}) for o in cat.offers]
    big = cat.model_copy(update={"offers": [*cat.offers, *copies]})
    return dump_catalog(big, out / "catalog.yaml")


def simulate_to(out: Path, members: int, seed: int) -> dict[str, float]:
    """Simulate and write the program; returns timing and sizes."""
    from features.sim.config import SimConfig
    from features.sim.simulate import simulate

    t0 = time.perf_counter()
    program = simulate(members, seed=seed, config=SimConfig(catalog_path=_catalog(out)))
    t1 = time.perf_counter()
    program.write(out / "data")
    sizes = {
        "transactions": len(program.transactions),
        "offer_events": len(program.offer_events),
        "offers": len(program.offers),
    }
    return {"simulate_s": t1 - t0, "write_s": time.perf_counter() - t1, **sizes}


def child(data: Path, threads: int, rank_members: int) -> dict[str, float]:
    """Train and rank in this (fresh) process; peak RSS from getrusage."""
    from features.pipeline import load_tables
    from models.affinity import ALS, Blend, InteractionSettings, build_interactions
    from models.affinity.segments import member_segments

    out: dict[str, float] = {}
    t = time.perf_counter()
    tables = {
        name: pd.read_parquet(data / f"{name}.parquet", columns=cols)
        for name, cols in COLUMNS.items()
    }
    out["load_s"] = time.perf_counter() - t
    as_of = tables["transactions"]["ts"].max() + pd.Timedelta(seconds=1)
    t = time.perf_counter()
    inter = build_interactions(tables, as_of, InteractionSettings())
    out["interactions_s"] = time.perf_counter() - t
    out["members"] = inter.n_members
    out["items"] = inter.n_items
    out["nnz"] = inter.confidence.nnz
    t = time.perf_counter()
    seg = member_segments(load_tables(data), as_of)
    inter = inter.with_segments(seg.reindex(inter.member_ids).fillna("none|none").to_numpy(str))
    out["segments_s"] = time.perf_counter() - t
    del tables
    t = time.perf_counter()
    als = ALS(factors=64, iterations=15, regularization=0.05, num_threads=threads).fit(inter)
    out["als_fit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    blend = Blend.from_als(als, inter, freq_weight=1.0, als_weight=0.5)
    out["blend_build_s"] = time.perf_counter() - t
    out["peak_rss_train_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rng = np.random.default_rng(0)
    offers = inter.items_of_kind("offer")
    n = min(rank_members, inter.n_members)
    rows = rng.choice(inter.n_members, size=n, replace=False)
    eligible = np.zeros((n, len(offers)), dtype=bool)
    pick = np.argsort(rng.uniform(size=(n, len(offers))), axis=1)[:, :50]
    np.put_along_axis(eligible, pick, True, axis=1)
    shared = np.sort(rng.choice(offers, size=50, replace=False))
    batch_size = 4096
    for name, model, mask in (
        ("blend_mask", blend, True),
        ("als_mask", als, True),
        ("als_items", als, False),
    ):
        t = time.perf_counter()
        for lo in range(0, n, batch_size):
            b = inter.take(rows[lo : lo + batch_size])
            if mask:
                model.rank(b, offers, 10, eligible[lo : lo + batch_size])
            else:
                model.rank(b, shared, 10)
        out[f"rank_{name}_members_per_s"] = n / (time.perf_counter() - t)
    out["offers"] = len(offers)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _run(cmd: list[str]) -> dict[str, float]:
    """Run a child step; its last stdout line is a JSON object of figures."""
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(res.stderr[-4000:], file=sys.stderr)
        raise SystemExit(res.returncode)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="implicit threads for ALS fitting")
    ap.add_argument("--rank-members", type=int, default=200_000)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--simulate-into", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.rank_members)))
        return
    if args.simulate_into:
        print(json.dumps(simulate_to(args.simulate_into, args.members, args.seed)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-affinity-") as tmp:
        out = Path(tmp)
        sim = _run([sys.executable, __file__, "--simulate-into", str(out), "--members",
                    str(args.members), "--seed", str(args.seed)])  # fmt: skip
        print(f"simulated {args.members:,} members: {json.dumps(sim)}", flush=True)
        figures = _run(
            [
                sys.executable,
                __file__,
                "--child",
                str(out / "data"),
                "--threads",
                str(args.threads),
                "--rank-members",
                str(args.rank_members),
            ]
        )
    print(f"{'figure':<34} {'value':>14}")
    for k, v in {**sim, **figures}.items():
        print(f"{k:<34} {v:>14,.1f}" if isinstance(v, float) else f"{k:<34} {v:>14,}")


if __name__ == "__main__":
    main()
