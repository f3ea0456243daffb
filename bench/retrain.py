"""Benchmark of a whole retrain: the user's commands, as processes, with wall time and peak memory.

Steps, each its own ``offers`` process (what a data scientist runs):

1. ``offers features --data D --as-of A --out F`` (member features as of the data's end);
2. ``offers train affinity --data D`` (validation search, final fit, test metrics, MLflow
   registration and the champion gate);
3. ``offers train uplift --data D`` (training set, fit per outcome, ONNX export and parity,
   registration and the gate).

Every step gets ``--memory-limit`` when given, and ``--engine`` for the steps that have it.
Peak memory is the largest resident set of the step's process tree (Python, DuckDB threads, the
Spark JVM), sampled every 0.1 s, and ``maxrss``, the kernel's "maximum resident set size" of
the process and its waited-for children (what ``/usr/bin/time -v`` prints); CPU seconds are the
process's and its children's user + system time (``wait4``), the step's cost on a machine
nobody else uses.

The Spark JVM is started by pyspark and never waited for: it exits after the Python driver, so
``wait4`` on the driver (and ``/usr/bin/time``) misses its CPU seconds and its memory. The
bench is therefore a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``): descendants that
outlive the driver are re-parented to it and reaped after the driver, and their kernel
figures (CPU seconds, maxrss) are added to the step's. Each step reports the driver and the
JVM apart: ``driver_cpu_seconds``/``driver_maxrss_gib`` (the ``offers`` process and the
children it waited for) and ``jvm_cpu_seconds``/``jvm_maxrss_gib`` (the processes that
outlived it; ``jvm_peak_gib`` is the sampled peak of the ``java`` processes).

The load average is printed with every figure: other jobs on the machine slow the wall
times down, so repeat a measurement taken under load. With ``--repeats N`` (alias
``--runs``) every step runs N times and the median wall time and the largest peak are shown
(each run registers new versions in a throw-away MLflow store under ``--out``). Give one
size or several (``--members 100000 1000000``: one table per size, smallest first).

``--as-limit-gib G`` runs every step under an address-space limit of G GiB (``RLIMIT_AS``, as
``prlimit --as`` does): a step that would need more fails (non-zero exit, ``MemoryError`` in
its log) instead of taking a shared machine's memory.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/retrain.py --members 100000 1000000 \\
        --seed 77 --out /work/runs/bench-retrain --memory-limit 2GB --as-limit-gib 14
    .venv/bin/python bench/retrain.py --data /work/runs/p1m --memory-limit 4GB
    .venv/bin/python bench/retrain.py --data /work/runs/p100k --engine spark --steps affinity

Prints one JSON line per step run, then a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shlex
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OFFERS = [str(REPO / ".venv" / "bin" / "offers")]
STEPS = ("features", "affinity", "uplift")


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class PeakRSS:
    """Samples the summed resident memory of a process and all its descendants, and the peak
    of each descendant by name (``by_name``: e.g. ``java``, the Spark JVM)."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._every = every_s
        self.peak = 0
        self.by_name: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
        except Exception:  # the process just exited
            return 0
        per_name: dict[str, int] = {}
        for p in procs:
            try:
                rss = p.memory_info().rss
                name = self.names[p.pid] = p.name()  # a pid that exec'd (bash -> java) renames
            except Exception:  # a child that just exited
                continue
            total += rss
            per_name[name] = per_name.get(name, 0) + rss
        for name, rss in per_name.items():
            self.by_name[name] = max(self.by_name.get(name, 0), rss)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self._every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def data_end(data: Path) -> str:
    """The day after the latest transaction: features see the whole history."""
    import duckdb

    path = data / "transactions.parquet"
    last = duckdb.sql(f"SELECT max(ts) FROM read_parquet('{path}')").fetchone()[0]
    return (last.date().fromordinal(last.date().toordinal() + 1)).isoformat()


def commands(args: argparse.Namespace, data: Path, work: Path) -> dict[str, list[str]]:
    """The command line of every step."""
    limit = ["--memory-limit", args.memory_limit] if args.memory_limit else []
    engine = ["--engine", args.engine]
    out = {
        "features": [
            *OFFERS, "features", "--data", str(data), "--as-of", args.as_of or data_end(data),
            "--out", str(work / "features.parquet"), *engine, *limit,
        ],
        "affinity": [*OFFERS, "train", "affinity", "--data", str(data), *engine, *limit],
        "uplift": [*OFFERS, "train", "uplift", "--data", str(data), *engine, *limit],
    }  # fmt: skip
    out["affinity"] += shlex.split(args.affinity_args)
    out["uplift"] += shlex.split(args.uplift_args)
    return {s: out[s] for s in args.steps}


def _address_space_limit(gib: float | None):
    """A ``preexec_fn`` setting ``RLIMIT_AS`` to ``gib`` GiB in the child (None: no limit)."""
    if gib is None:
        return None
    limit = int(gib * 2**30)
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_step(
    step: str, cmd: list[str], env: dict[str, str], log: Path, as_limit_gib: float | None = None
) -> dict[str, object]:
    """Run one step as a process; its wall time, peak RSS, exit code and load averages."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            preexec_fn=_address_space_limit(as_limit_gib),
        )
        with PeakRSS(proc.pid) as rss:
            _, status, usage = os.wait4(proc.pid, 0)
            orphans = reap_orphans()
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    driver_cpu = usage.ru_utime + usage.ru_stime
    orphan_cpu = sum(u.ru_utime + u.ru_stime for _, u in orphans)
    orphan_maxrss = max((u.ru_maxrss for _, u in orphans), default=0)
    return {
        "step": step,
        "seconds": round(wall, 1),
        # CPU of the process, its waited-for children and the descendants that outlived it
        # (the Spark JVM): what the step costs when the machine is not shared (wall time on
        # 2 idle cores is at least half of it)
        "cpu_seconds": round(driver_cpu + orphan_cpu, 1),
        "driver_cpu_seconds": round(driver_cpu, 1),
        "jvm_cpu_seconds": round(orphan_cpu, 1),
        "peak_gib": round(rss.peak / 2**30, 2),
        "maxrss_gib": round(max(usage.ru_maxrss, orphan_maxrss) * 1024 / 2**30, 2),  # KiB
        "driver_maxrss_gib": round(usage.ru_maxrss * 1024 / 2**30, 2),
        "jvm_maxrss_gib": round(orphan_maxrss * 1024 / 2**30, 2),
        "jvm_peak_gib": round(rss.by_name.get("java", 0) / 2**30, 2),
        "late_exits": sorted({rss.names.get(pid, str(pid)) for pid, _ in orphans}),
        "exit": code,
        "load_start": round(load0, 1),
        "load_end": round(os.getloadavg()[0], 1),
        "log": str(log),
    }


def reap_orphans(timeout_s: float = 600.0) -> list[tuple[int, Any]]:
    """Wait for every remaining child (the orphans re-parented to this subreaper: pyspark's
    JVM exits once the driver has gone); their pids and ``rusage``. Children still alive after
    ``timeout_s`` are killed, by pid, and reaped."""
    out: list[tuple[int, Any]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pid, _, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:  # no children left
            return out
        if pid:
            out.append((pid, usage))
            continue
        if time.monotonic() > deadline:
            import psutil

            for child in psutil.Process().children():
                print(f"killing pid {child.pid} ({child.name()}): alive {timeout_s:g} s after "
                      "its step's driver", flush=True)  # fmt: skip
                child.kill()
            deadline = float("inf")
        time.sleep(0.05)


def simulate(members: int, seed: int, work: Path) -> Path:
    """``offers simulate`` into ``work`` (reused when already there)."""
    out = work / f"sim-{members}-seed{seed}"
    if not (out / "transactions.parquet").exists():
        cmd = [*OFFERS, "simulate", "--members", str(members), "--seed", str(seed)]
        subprocess.run([*cmd, "--out", str(out)], check=True, cwd=REPO)
    return out


def table(data: Path, args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown table of one data set's steps."""
    lines = [
        f"\n{data} ({args.engine}, memory limit {args.memory_limit or 'none'}, address-space "
        f"limit {f'{args.as_limit_gib:g} GiB' if args.as_limit_gib else 'none'}, "
        f"{args.runs} run(s) per step)\n",
        "| step | wall s (median) | CPU s (median) | driver / JVM CPU s (median) "
        "| peak GiB (tree, max) | maxrss GiB (max) | driver / JVM maxrss GiB (max) "
        "| exit | load start..end |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    total = total_cpu = 0.0
    for step, runs in results.items():
        wall = statistics.median(float(r["seconds"]) for r in runs)
        cpu = statistics.median(float(r["cpu_seconds"]) for r in runs)
        total, total_cpu = total + wall, total_cpu + cpu
        peak = max(float(r["peak_gib"]) for r in runs)
        maxrss = max(float(r["maxrss_gib"]) for r in runs)
        d_cpu = statistics.median(float(r["driver_cpu_seconds"]) for r in runs)
        j_cpu = statistics.median(float(r["jvm_cpu_seconds"]) for r in runs)
        d_rss = max(float(r["driver_maxrss_gib"]) for r in runs)
        j_rss = max(float(r["jvm_maxrss_gib"]) for r in runs)
        loads = ", ".join(f"{r['load_start']}..{r['load_end']}" for r in runs)
        codes = ",".join(str(r["exit"]) for r in runs)
        lines.append(
            f"| {step} | {wall:.1f} | {cpu:.1f} | {d_cpu:.1f} / {j_cpu:.1f} | {peak:.2f} "
            f"| {maxrss:.2f} | {d_rss:.2f} / {j_rss:.2f} | {codes} | {loads} |"
        )
    lines.append(f"| **total** | {total:.1f} | {total_cpu:.1f} | | | | | | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="a canonical data directory (else --members)")
    p.add_argument("--members", type=int, nargs="+", default=[100_000], help="simulate these sizes")
    p.add_argument("--seed", type=int, default=77)
    p.add_argument(
        "--out", "--work", dest="work", type=Path, default=Path("/work/runs/bench-retrain")
    )
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument("--engine", default="duckdb", choices=("duckdb", "spark"))
    p.add_argument("--memory-limit", default=None, help="passed to every step, e.g. 4GB")
    p.add_argument("--as-limit-gib", type=float, default=None, help="RLIMIT_AS of every step")
    p.add_argument("--as-of", default=None, help="features as of (default: the data's end)")
    p.add_argument(
        "--repeats", "--runs", dest="runs", type=int, default=1, help="runs per step (median)"
    )
    p.add_argument("--affinity-args", default="", help="more options of train affinity")
    p.add_argument("--uplift-args", default="", help="more options of train uplift")
    args = p.parse_args()
    if not become_subreaper():
        print("warning: not a subreaper; the CPU and maxrss of a Spark JVM are not counted")
    args.work.mkdir(parents=True, exist_ok=True)
    datasets = [args.data] if args.data else [
        simulate(n, args.seed, args.work) for n in sorted(args.members)
    ]  # fmt: skip
    tables = []
    for data in datasets:
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "OFFERS_HOME": str(args.work / f"home-{data.name}"),
        }
        env.pop("MLFLOW_TRACKING_URI", None)  # the throw-away store under OFFERS_HOME
        results: dict[str, list[dict[str, Any]]] = {}
        out = args.work / f"out-{data.name}"  # the features file; never inside the data
        out.mkdir(exist_ok=True)
        for step, cmd in commands(args, data, out).items():
            for i in range(args.runs):
                log = args.work / f"{data.name}-{step}-{i}.log"
                r = run_step(step, cmd, env, log, args.as_limit_gib)
                r |= {"run": i, "data": str(data), "engine": args.engine, "cmd": " ".join(cmd)}
                print(json.dumps(r), flush=True)
                results.setdefault(step, []).append(r)
        tables.append(table(data, args, results))
    print("\n".join(tables), flush=True)


if __name__ == "__main__":
    main()
