"""Benchmark of the budget-aware allocation (serving.engine.allocation): time and peak memory.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/allocation.py [--members 1000000]
        [--offers 30] [--k 3] [--tightness 0.5] [--seed 0]

Synthetic send: value = margin x incremental spend - P(redeem) x cost with member and offer
structure; half the offers have a count budget, a third a money budget, both set to
``tightness`` x what an unconstrained greedy send would spend, so most budgets bind. Prints the
solve time, the iterations, peak memory (RSS, psutil) of the process, the value kept against
the unconstrained greedy and the worst budget usage ratio (must be <= 1). Does not assert on
time.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np
import psutil

from serving.engine.allocation import Budgets, allocate, greedy_slate


class PeakRSS:
    """Samples the process' resident memory every 20 ms in a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process(os.getpid())
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def make_problem(n: int, m: int, seed: int) -> dict[str, np.ndarray]:
    """A random send with member x offer structure (float32 matrices)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    u = rng.normal(size=(n, 4)).astype(f32)
    v = rng.normal(size=(4, m)).astype(f32)
    logit = (u @ v) * f32(0.6) - f32(1.5)
    p = (1 / (1 + np.exp(-logit))).astype(f32)
    cost = rng.uniform(0.5, 8, m).astype(f32)
    spend = rng.uniform(10, 60, m).astype(f32)
    incr = (p * rng.uniform(0.1, 0.6, (n, m)).astype(f32) * spend).astype(f32)
    value = (f32(0.3) * incr - p * cost).astype(f32)
    allowed = rng.random((n, m), dtype=f32) < f32(0.7)
    kind = rng.integers(0, 10, m)
    return {"value": value, "p": p, "cost": cost, "allowed": allowed, "kind": kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--offers", type=int, default=30)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--tightness", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, m, k = args.members, args.offers, args.k
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        pr = make_problem(n, m, args.seed)
        t_make = time.perf_counter() - t0
        slots = np.full(n, k)
        free = greedy_slate(pr["value"], pr["allowed"], slots, pr["kind"], 1, k)
        i, r = np.nonzero(free >= 0)
        j = free[i, r]
        free_value = float(pr["value"][i, j].sum())
        count_use = np.bincount(j, weights=pr["p"][i, j], minlength=m)
        # Offers 0, 2, 4, ...: count budgets; 1, 4, 7, ...: money budgets (some have both).
        rows, limits, names = [], [], []
        for jj in range(0, m, 2):
            w = np.zeros(m)
            w[jj] = 1.0
            rows.append(w)
            limits.append(args.tightness * count_use[jj])
            names.append(f"count:{jj}")
        for jj in range(1, m, 3):
            w = np.zeros(m)
            w[jj] = pr["cost"][jj]
            rows.append(w)
            limits.append(args.tightness * count_use[jj] * pr["cost"][jj])
            names.append(f"money:{jj}")
        budgets = Budgets(np.array(rows), np.array(limits), tuple(names))
        t1 = time.perf_counter()
        res = allocate(pr["value"], pr["p"], pr["allowed"], slots, pr["kind"], budgets, 1, k)
        t_alloc = time.perf_counter() - t1
    i, r = np.nonzero(res.picks >= 0)
    kept_value = float(pr["value"][i, res.picks[i, r]].sum())
    live = budgets.limits > 0  # offers the unconstrained send never picks get a zero budget
    ratio = res.usage[live] / budgets.limits[live]
    out = {
        "members": n,
        "offers": m,
        "k": k,
        "budgets": budgets.n,
        "budgets_nonzero": int(live.sum()),
        "budgets_99pct_full": int((ratio >= 0.99).sum()),
        "make_problem_s": round(t_make, 2),
        "allocation_s": round(t_alloc, 2),
        "iterations": res.iterations,
        "repaired": res.repaired,
        "refilled": res.refilled,
        "peak_rss_gib": round(mem.peak / 2**30, 2),
        "value_vs_unconstrained": round(kept_value / free_value, 4),
        "max_budget_usage_ratio": round(float(ratio.max()), 6),
        "min_budget_usage_ratio": round(float(ratio.min()), 4),
        "zero_budgets_used": float(res.usage[~live].sum()),
        "offers_sent": len(i),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
