"""Benchmark of the synthetic program: wall time and peak memory of simulate() + write().

Each size runs in its own subprocess, so the peak resident memory (ru_maxrss) is that size's
alone. Prints one line per size; asserts nothing.

    .venv/bin/python bench/simulate.py                    # 10k and 1M members
    .venv/bin/python bench/simulate.py --sizes 10000 100000
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

REPO = Path(__file__).resolve().parents[1]


def _child(n: int, seed: int, out: str) -> None:
    sys.path.insert(0, str(REPO))
    from features.sim.simulate import simulate

    t0 = time.perf_counter()
    program = simulate(n_members=n, seed=seed)
    t1 = time.perf_counter()
    program.write(out)
    t2 = time.perf_counter()
    rows = {name: len(df) for name, df in program.tables().items()}
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(
        json.dumps(
            {
                "simulate_s": t1 - t0,
                "write_s": t2 - t1,
                "peak_bytes": peak,
                "rows": rows,
                "disk_bytes": size,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child, args.seed, args.out)
        return
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    print(
        f"{'members':>10} {'simulate s':>11} {'write s':>8} {'peak GiB':>9} "
        f"{'txn lines':>11} {'events':>10} {'on disk MB':>10}"
    )
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--seed",
                str(args.seed),
                "--out",
                tmp,
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if res.returncode != 0:
                print(f"{n:>10,} failed:\n{res.stderr}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"{n:>10,} {r['simulate_s']:>11.1f} {r['write_s']:>8.1f} "
                f"{r['peak_bytes'] / 2**30:>9.2f} {r['rows']['transactions']:>11,} "
                f"{r['rows']['offer_events']:>10,} {r['disk_bytes'] / 1e6:>10.1f}"
            )


if __name__ == "__main__":
    main()
