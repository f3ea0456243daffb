"""DuckDB-vs-Spark parity of the model inputs at scale: the affinity interaction matrix and
the uplift training set, built by the functions ``offers train`` calls, on each engine.

Two sub-commands, so that each engine runs in its own process (one heavy job at a time):

``build`` builds, on one engine, the interaction matrix as of the data's end
(``build_interactions`` with the default settings: offers and purchased categories) and the
uplift training set with ``offers train uplift``'s default settings (the treatment grain
resolved as the command does), writes them under ``--out`` (``interactions.npz``,
``training_set.parquet``) and prints one JSON line per phase: wall seconds, the driver's CPU
seconds (``RUSAGE_SELF``) and the Spark JVM's (its ``/proc`` times, read before the session
ends), the driver's peak RSS and the JVM's (``VmHWM``), the load average.

``compare`` reads two ``build`` outputs (and optionally two feature snapshots written by
``offers features``) and prints, for each input: rows, non-zeros and column sums on both
sides, and the largest absolute difference of every float column (integers, strings and
times must be equal, compared as text), and the columns whose dtypes differ (reported, not a
failure: the values are compared); exit code 1 when a difference is over ``--tol`` (1e-9).

    OPENBLAS_NUM_THREADS=1 SPARK_MASTER='local[2]' .venv/bin/python bench/spark_parity.py \\
        build --data /work/runs/hb/p1m --engine spark --memory-limit 4GB --out /tmp/par/spark
    .venv/bin/python bench/spark_parity.py build --data /work/runs/hb/p1m --engine duckdb \\
        --memory-limit 2GB --out /tmp/par/duckdb
    .venv/bin/python bench/spark_parity.py compare /tmp/par/duckdb /tmp/par/spark \\
        --features a/features.parquet b/features.parquet

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # bench/features.py must not shadow the features package
    sys.path.insert(0, str(ROOT))

from features.sources import schema as S  # noqa: E402

GIB = 2**30


def _jvm_pids() -> list[int]:
    """The ``java`` processes among this process's descendants (the Spark JVM)."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name() == "java":
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


def _jvm_figures() -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS in GiB (``VmHWM``) of the JVM processes."""
    cpu = hwm = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _jvm_pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(stat[11]) + int(stat[12])) / tick  # utime, stime (fields 14, 15)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]) * 1024 / GIB)
        except (OSError, IndexError, ValueError):
            continue
    return cpu, hwm


def _phase(name: str, fn: Callable[[], Any], engine: str) -> Any:
    """Run ``fn`` and print its figures as one JSON line."""
    load0 = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    j0, _ = _jvm_figures()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    j1, jvm_hwm = _jvm_figures()
    driver_cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    print(
        json.dumps(
            {
                "phase": name,
                "engine": engine,
                "seconds": round(wall, 1),
                "cpu_seconds": round(driver_cpu + j1 - j0, 1),
                "driver_cpu_seconds": round(driver_cpu, 1),
                "jvm_cpu_seconds": round(j1 - j0, 1),
                "driver_maxrss_gib": round(r1.ru_maxrss * 1024 / GIB, 2),
                "jvm_maxrss_gib": round(jvm_hwm, 2),
                "load_start": round(load0, 1),
                "load_end": round(os.getloadavg()[0], 1),
            }
        ),
        flush=True,
    )
    return out


def build(args: argparse.Namespace) -> None:
    """Build both inputs on one engine and write them under ``args.out``."""
    from training.affinity.data import open_affinity_tables
    from training.uplift.data import build_training_set, open_tables
    from training.uplift.fit import UpliftTrainSettings, resolve_treatment
    from training.uplift.train import sends_per_offer

    args.out.mkdir(parents=True, exist_ok=True)
    data, engine, limit = args.data, args.engine, args.memory_limit
    tables = _phase("open", lambda: open_affinity_tables(data, engine, limit), engine)
    tx = tables["transactions"]
    as_of = pd.Timestamp(tx[S.TS].max().execute()) + pd.Timedelta(days=1)
    if not args.skip_interactions:
        _interactions(args, tables, as_of)
    settings = resolve_treatment(UpliftTrainSettings(), sends_per_offer(data))
    config = settings.training_set_config()
    uplift_tables = open_tables(data, engine, limit)  # the same session on Spark
    ts = _phase("training_set", lambda: build_training_set(uplift_tables, config), engine)
    ts.frame.to_parquet(args.out / "training_set.parquet")
    meta = {"as_of": str(as_of.normalize()), "treatment": config.treatment, "rows": len(ts.frame)}
    (args.out / "meta.json").write_text(json.dumps(meta))
    print(json.dumps(meta), flush=True)


def _interactions(args: argparse.Namespace, tables: Any, as_of: pd.Timestamp) -> None:
    """Build the interaction matrix as of ``as_of`` and write it to ``interactions.npz``."""
    from models.affinity.interactions import build_interactions

    engine = args.engine
    inter = _phase("interactions", lambda: build_interactions(tables, as_of.normalize()), engine)
    np.savez(
        args.out / "interactions.npz",
        member_ids=inter.member_ids,
        item_ids=inter.item_ids,
        **{
            f"{name}_{part}": getattr(getattr(inter, name), part)
            for name in ("confidence", "count", "last_days")
            for part in ("data", "indices", "indptr")
        },
        shape=np.asarray(inter.confidence.shape),
    )
    del inter


def _matrices(path: Path) -> dict[str, Any]:
    z = np.load(path / "interactions.npz")
    shape = tuple(z["shape"])
    out: dict[str, Any] = {"member_ids": z["member_ids"], "item_ids": z["item_ids"]}
    for name in ("confidence", "count", "last_days"):
        parts = (z[f"{name}_data"], z[f"{name}_indices"], z[f"{name}_indptr"])
        out[name] = sp.csr_matrix(parts, shape=shape)
    return out


def _frame_diffs(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> dict[str, Any]:
    """Rows, columns and per-column differences of two frames aligned on ``keys``."""
    res: dict[str, Any] = {"rows": [len(a), len(b)], "columns": [a.shape[1], b.shape[1]]}
    if sorted(a.columns) != sorted(b.columns):
        res["columns_only_in"] = [
            sorted(set(a.columns) - set(b.columns)),
            sorted(set(b.columns) - set(a.columns)),
        ]
    res["dtypes_differ"] = [
        f"{c}: {a[c].dtype} vs {b[c].dtype}"
        for c in a.columns
        if c in b.columns and a[c].dtype != b[c].dtype
    ]
    a = a.sort_values(keys, kind="stable").reset_index(drop=True)
    b = b.sort_values(keys, kind="stable").reset_index(drop=True)
    if len(a) != len(b):
        return res
    worst, unequal, sums = 0.0, [], {}
    for col in sorted(set(a.columns) & set(b.columns)):
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x) or pd.api.types.is_float_dtype(y):
            xv, yv = (
                x.to_numpy(np.float64, na_value=np.nan),
                y.to_numpy(np.float64, na_value=np.nan),
            )
            if not np.array_equal(np.isnan(xv), np.isnan(yv)):
                unequal.append(f"{col} (nulls)")
                continue
            d = float(np.nanmax(np.abs(xv - yv))) if len(xv) else 0.0
            worst = max(worst, 0.0 if np.isnan(d) else d)
            sums[col] = [float(np.nansum(xv)), float(np.nansum(yv))]
        elif not x.astype(str).equals(y.astype(str)):
            unequal.append(col)
    res |= {"max_abs_diff_float": worst, "unequal_columns": unequal}
    res["float_column_sums_largest_rel_diff"] = max(
        (abs(s[0] - s[1]) / max(abs(s[0]), 1e-300) for s in sums.values()), default=0.0
    )
    return res


def compare(args: argparse.Namespace) -> int:
    """Print the parity figures of two ``build`` outputs; 1 if they differ beyond ``tol``."""
    ok = True
    a, b = _matrices(args.a), _matrices(args.b)
    same_ids = np.array_equal(a["member_ids"], b["member_ids"]) and np.array_equal(
        a["item_ids"], b["item_ids"]
    )
    inter: dict[str, Any] = {"same_member_and_item_ids": bool(same_ids)}
    for name in ("confidence", "count", "last_days"):
        ma, mb = a[name], b[name]
        inter[name] = {"shape": list(ma.shape), "nnz": [ma.nnz, mb.nnz]}
        inter[name]["sum"] = [float(ma.sum(dtype=np.float64)), float(mb.sum(dtype=np.float64))]
        if same_ids and ma.shape == mb.shape:
            diff = abs(ma.astype(np.float64) - mb.astype(np.float64))
            inter[name]["max_abs_diff"] = float(diff.max()) if diff.nnz else 0.0
            ok &= inter[name]["max_abs_diff"] <= args.tol * max(1.0, float(abs(ma).max()))
        ok &= ma.nnz == mb.nnz
    ok &= same_ids
    print(json.dumps({"interactions": inter}), flush=True)

    ta = pd.read_parquet(args.a / "training_set.parquet")
    tb = pd.read_parquet(args.b / "training_set.parquet")
    res = _frame_diffs(ta, tb, [S.EVENT_ID])
    print(json.dumps({"training_set": res}), flush=True)
    ok &= res["rows"][0] == res["rows"][1] and not res.get("unequal_columns", ["?"])
    ok &= res.get("max_abs_diff_float", np.inf) <= args.tol
    if args.features:
        fa, fb = (pd.read_parquet(p) for p in args.features)
        res = _frame_diffs(fa, fb, [S.MEMBER_ID])
        print(json.dumps({"features": res}), flush=True)
        ok &= res["rows"][0] == res["rows"][1] and not res.get("unequal_columns", ["?"])
        ok &= res.get("max_abs_diff_float", np.inf) <= args.tol
    print(json.dumps({"parity": bool(ok), "tol": args.tol}), flush=True)
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--data", type=Path, required=True)
    b.add_argument("--engine", choices=("duckdb", "spark"), required=True)
    b.add_argument("--memory-limit", default=None)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--skip-interactions", action="store_true", help="the training set only")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--features", type=Path, nargs=2, default=None)
    c.add_argument("--tol", type=float, default=1e-9)
    args = p.parse_args()
    if args.cmd == "build":
        build(args)
    else:
        sys.exit(compare(args))


if __name__ == "__main__":
    main()
