"""Benchmark of e-mail batch scoring (serving.batch): members/s and peak memory.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.score [--members 1000000] [--offers 30]
        [--k 3] [--chunk-size 100000] [--price-sample 100000] [--spark-members 100000]
        [--no-spark] [--no-onnx] [--uplift-program-members 4000] [--seed 0]

Simulated send: ``serving.batch.synthetic`` members and catalog (a third of the offers with a
count budget, a sixth with a money budget, sized to bind), scores from
``SyntheticScorer`` (P(redeem) from member x offer factors, incremental spend from a linear
uplift head; the ``onnx_uplift`` stage uses the trained ONNX uplift model instead),
``offers_per_member = k``, holdout 5%, exploration 5%. Stages, each timed end to end (price
solve on the sample, chunks, part files, the assembled Parquet; the store is not written):

* ``baseline``: a plain factor dot product + top-k over the same members and offers (factors
  already in memory), chunked: the reference the issue compares against;
* ``local``: ``run_local`` over ``--members``;
* ``onnx_uplift``: the same send scored with the REAL uplift model: a program of
  ``--uplift-program-members`` is simulated (``features.sim.simulate``), the uplift model fitted on
  it by the training code (S-learner, LightGBM, 30 trees; ``training.uplift.fit``), exported to
  ONNX and saved as pyfunc artifacts (training time printed, not counted); the members are the
  program's member features as of its end (computed with the model's feature configuration),
  repeated to ``--members`` rows under new ids; incremental spend comes from the ONNX model
  (per offer kind), P(redeem) from the synthetic factors (``UpliftHeadScorer``);
* ``spark``: ``run_spark`` over ``--spark-members`` on ``local[2]`` (two passes: demand, then
  decisions).

Peak memory: the largest resident set of this process (and, for Spark, its child processes:
JVM and Python workers) sampled every 20 ms during the stage. Prints a table and one JSON line.
Does not assert on time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from rich.console import Console
from rich.table import Table

from serving.batch import SendPlan, SyntheticScorer, parse_campaign, run_local
from serving.batch.synthetic import synthetic_catalog, synthetic_members

UPLIFT_TREES = {"n_estimators": 30, "learning_rate": 0.1, "min_child_samples": 100}
MEMBER_ID = "member_id"

console = Console()


class PeakMemory:
    """Largest RSS of this process (+ children if asked), sampled every 20 ms in a thread."""

    def __init__(self, children: bool = False) -> None:
        self.proc = psutil.Process(os.getpid())
        self.children = children
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        total = self.proc.memory_info().rss
        if self.children:
            for c in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += c.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self.peak = self.rss()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def write_members(path: Path, n: int, seed: int, block: int = 250_000) -> None:
    """Member features in blocks (Parquet, one row group per block)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, n, block):
        t = pa.Table.from_pandas(
            synthetic_members(min(block, n - start), seed, start), preserve_index=False
        )
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    if writer is not None:
        writer.close()


def campaign(k: int, sample: int):
    return parse_campaign(
        {
            "campaign_id": "bench",
            "channel": "email",
            "send_date": "2026-11-01",
            "offers_per_member": k,
            "price_sample": sample,
        }
    )


def baseline(n: int, m: int, k: int, chunk: int, seed: int) -> dict[str, float]:
    """Factor dot product + top-k (factors already in memory)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 8)).astype(np.float32)
    v = rng.normal(size=(8, m)).astype(np.float32)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        for a in range(0, n, chunk):
            s = u[a : a + chunk] @ v
            top = np.argpartition(-s, kth=k, axis=1)[:, :k]
            np.take_along_axis(s, top, axis=1).argsort(axis=1)
        secs = time.perf_counter() - t0
    return {"members": n, "seconds": secs, "members_per_s": n / secs, "peak_gib": mem.peak / 2**30}


def local(args: argparse.Namespace, work: Path) -> dict[str, float]:
    n = args.members
    feats = work / "local.parquet"
    write_members(feats, n, args.seed)
    camp = campaign(args.k, args.price_sample)
    plan = SendPlan.create(camp, synthetic_catalog(args.offers, n, args.seed))
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        r = run_local(
            camp,
            plan,
            SyntheticScorer(),
            feats,
            work / "local-out.parquet",
            chunk_size=args.chunk_size,
        )
        secs = time.perf_counter() - t0
    return _figures(r, plan, n, secs, mem.peak)


def train_uplift_onnx(args: argparse.Namespace, work: Path) -> tuple[Path, pd.DataFrame, dict]:
    """Simulate a program, fit the uplift model (S-learner, LightGBM, few trees) with the
    project's training code, export it to ONNX and save its pyfunc artifacts. Returns the
    artifact directory, the program's member features as of its end (with the model's
    feature configuration) and what was trained."""
    from features.pipeline import load_tables, member_features
    from features.sim.simulate import SimConfig, simulate
    from models.uplift.pyfunc import save_artifacts
    from training.uplift.data import build_training_set
    from training.uplift.fit import UpliftTrainSettings, fit_uplift, resolve_treatment
    from training.uplift.train import sends_per_offer

    t0 = time.perf_counter()
    data = work / "program"
    config = SimConfig(campaign_share=1.0)
    program = simulate(args.uplift_program_members, seed=args.seed, config=config)
    program.write(data)
    settings = UpliftTrainSettings(base_params=UPLIFT_TREES, seed=args.seed)
    settings = resolve_treatment(settings, sends_per_offer(data))
    ts = build_training_set(data, settings.training_set_config())
    fitted = fit_uplift(ts, settings)
    meta = {
        "outcomes": list(settings.outcomes),
        "treatments": fitted.treatments,
        "control": ts.control,
        "treatment_grain": settings.treatment,
        "learner": settings.learner,
        "feature_config": json.loads(ts.feature_config.model_dump_json()),
    }
    arts = work / "uplift-model"
    save_artifacts(fitted.onnx, fitted.encoder, meta, arts)
    end = program.transactions["ts"].max().normalize() + pd.Timedelta(days=1)
    feats = member_features(load_tables(data), end, ts.feature_config).to_pandas()
    info = {
        "program_members": args.uplift_program_members,
        "training_rows": int(fitted.metrics.get("rows.train", 0)),
        "treatments": fitted.treatments,
        "onnx_max_abs_diff": max(fitted.parity.values()),
        "train_seconds": time.perf_counter() - t0,
    }
    return arts, feats, info


def write_member_features(path: Path, feats: pd.DataFrame, n: int, block: int = 250_000) -> None:
    """``n`` member-feature rows: the program's members repeated, with new ids ``m<8 digits>``
    (their P(redeem) comes from the synthetic factors keyed on the id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n)) % len(feats)
        frame = feats.iloc[rows].reset_index(drop=True)
        frame[MEMBER_ID] = [f"m{i:08d}" for i in range(start, start + len(rows))]
        t = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    if writer is not None:
        writer.close()


def onnx_uplift(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """``run_local`` over ``--members`` scored with the trained ONNX uplift model."""
    from serving.batch.scorers import UpliftHeadScorer, load_model_dir

    arts, feats, info = train_uplift_onnx(args, work)
    console.print(
        f"uplift model: {info['training_rows']:,} training rows from "
        f"{info['program_members']:,} simulated members, treatments {info['treatments']}, "
        f"ONNX max |diff| {info['onnx_max_abs_diff']:.1e}, trained in "
        f"{info['train_seconds']:.0f} s"
    )
    n = args.members
    path = work / "onnx-members.parquet"
    write_member_features(path, feats, n)
    del feats
    camp = campaign(args.k, args.price_sample)
    plan = SendPlan.create(camp, synthetic_catalog(args.offers, n, args.seed))
    scorer = UpliftHeadScorer(load_model_dir("uplift", arts))
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        r = run_local(
            camp, plan, scorer, path, work / "onnx-out.parquet", chunk_size=args.chunk_size
        )
        secs = time.perf_counter() - t0
    return _figures(r, plan, n, secs, mem.peak) | {"train_seconds": info["train_seconds"]}


def spark(args: argparse.Namespace, work: Path) -> dict[str, float]:
    from features.pipeline.engines import spark_session
    from serving.batch.spark import run_spark

    n = args.spark_members
    feats = work / "spark.parquet"
    write_members(feats, n, args.seed)
    camp = campaign(args.k, args.price_sample)
    plan = SendPlan.create(camp, synthetic_catalog(args.offers, n, args.seed))
    session = spark_session(master="local[2]", shuffle_partitions=4)
    try:
        with PeakMemory(children=True) as mem:
            t0 = time.perf_counter()
            r = run_spark(
                session,
                camp,
                plan,
                SyntheticScorer(),
                feats,
                work / "spark-out.parquet",
                partition_rows=args.chunk_size // 2,
            )
            secs = time.perf_counter() - t0
    finally:
        session.stop()
    return _figures(r, plan, n, secs, mem.peak)


def _figures(r, plan: SendPlan, n: int, secs: float, peak: int) -> dict[str, float]:
    lim = plan.budget_left
    has = np.isfinite(lim) & (lim > 0)
    worst = float(np.max(np.asarray(r.budget_used)[has] / lim[has])) if has.any() else 0.0
    return {
        "members": n,
        "rows": r.rows,
        "seconds": secs,
        "members_per_s": n / secs,
        "peak_gib": peak / 2**30,
        "worst_budget_use": worst,
        "binding_prices": sum(v > 0 for v in r.prices.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--offers", type=int, default=30)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=100_000)
    ap.add_argument("--price-sample", type=int, default=100_000)
    ap.add_argument("--spark-members", type=int, default=100_000)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--no-onnx", action="store_true", help="skip the trained ONNX uplift stage")
    ap.add_argument("--uplift-program-members", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        work = Path(tmp)
        results["baseline"] = baseline(
            args.members, args.offers, args.k, args.chunk_size, args.seed
        )
        results["local"] = local(args, work)
        if not args.no_onnx:
            results["onnx_uplift"] = onnx_uplift(args, work)
        if not args.no_spark:
            results["spark"] = spark(args, work)
    base = results["baseline"]["members_per_s"]
    ratio = results["local"]["members_per_s"] / base
    ratios = {k: v["members_per_s"] / base for k, v in results.items() if k != "baseline"}
    t = Table(title=f"batch scoring, {args.offers} offers, k={args.k}")
    cols = ("stage", "members", "seconds", "members/s", "ratio to baseline", "peak GiB")
    for c in (*cols, "worst budget use"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    for name, f in results.items():
        t.add_row(
            name,
            f"{f['members']:,}",
            f"{f['seconds']:.1f}",
            f"{f['members_per_s']:,.0f}",
            "1" if name == "baseline" else f"{ratios[name]:.4f}",
            f"{f['peak_gib']:.2f}",
            f"{f.get('worst_budget_use', float('nan')):.4f}",
        )
    console.print(t)
    console.print(f"local / baseline throughput: {ratio:.4f}")
    print(
        json.dumps(
            {
                "args": vars(args),
                "results": results,
                "local_over_baseline": ratio,
                "over_baseline": ratios,
                "load_average": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
