"""The checkout-session sweep on a file SQLite store (synchronous=FULL): time, CPU, write
transactions, and how long a checkout-like write waits for the lock meanwhile; the current code
and a git revision's side by side in one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/sweep.py [--sessions 10000] [--expired 10000] \\
        [--batch 200] [--pause 0.05] [--before REV] [--runs 3] [--dir /tmp/sweep-bench]

Per run and variant: a new store file with ``--sessions`` open sessions (two rewards each: a
counted offer with a per-member cap and a money offer with a frequency cap) and ``--expired``
closed sessions whose reward lapsed, all past the open limit; then ``sessions.sweep`` runs once
while a probe thread commits one small write transaction (a budget row's ``updated_at``, the
size of a checkout's group commit of one) every 5 ms on its own engine with a 5 s lock wait (so
a long wait is measured, not cut; the server's ``store_lock_wait_seconds`` is 0.25 s: waits
over it are counted as ``probe_over_250ms``). ``--before REV`` also sweeps with
``serving/store/sessions.py`` as it was at git revision REV (the variants alternate within each
run, so both see the same machine). Printed per run and as the median per variant: sweep
seconds, the sweeping thread's CPU seconds (user + system), write transactions (SQLAlchemy
``commit`` events), probe writes, their max and p99 wait in ms, failures, and the load average;
then the ratios of the current code to REV. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import event, text

from serving.store import CapKey, GrantRequest, ReservationItem, SessionRecord, open_store, utcnow
from serving.store import sessions as current

REPO = Path(__file__).resolve().parent.parent


def _before(rev: str) -> ModuleType:
    """``serving/store/sessions.py`` at git revision ``rev``, imported as its own module."""
    source = subprocess.run(
        ["git", "show", f"{rev}:serving/store/sessions.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    path = Path(f"/tmp/sweep_before_{rev}.py")
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"sweep_before_{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _request(tid: str, member: str, until: Any = None) -> GrantRequest:
    items: tuple[ReservationItem, ...] = (
        ReservationItem("a", amount=1.0, caps=(CapKey(member, "offer:a", "all", 9),)),
        ReservationItem("m", amount=2.5, caps=(CapKey(member, "channel:checkout", "7d-1", 9),)),
    )
    if until is not None:
        items = items[:1]
    response = {"transaction_id": tid, "decision_id": f"d-{tid}", "member_id": member,
                "rewards": [{"offer_id": i.offer_id} for i in items]}  # fmt: skip
    session = SessionRecord(
        transaction_id=tid,
        member_id=member,
        decision_id=f"d-{tid}",
        channel="checkout",
        response=response,
        valid_until=tuple(until for _ in items),
        surprise=tuple(False for _ in items),
        client_ts=None,
    )
    return GrantRequest(items, session)


def _populate(url: str, n_sessions: int, n_expired: int) -> None:
    store = open_store(url, sqlite_synchronous="FULL")
    store.set_budget("a", 1e9, unit="count")
    store.set_budget("m", 1e9, unit="money")
    store.set_budget("probe", 1e9, unit="count")
    past = utcnow() - timedelta(days=1)
    requests = [_request(f"s{i:06d}", f"m{i}") for i in range(n_sessions)]
    requests += [_request(f"e{i:06d}", f"x{i}", until=past) for i in range(n_expired)]
    for start in range(0, len(requests), 2000):
        store.reserve_grants(requests[start : start + 2000])
    with store.engine.begin() as connection:  # the expired ones were confirmed by the till
        connection.execute(text("UPDATE checkout_sessions SET state = 'closed' WHERE "
                                "transaction_id LIKE 'e%'"))  # fmt: skip
    store.close()


def _probe(url: str, stop: threading.Event, waits: list[float], failures: list[str]) -> None:
    store = open_store(url, migrate_schema=False, sqlite_synchronous="FULL", lock_wait_seconds=5)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with store.engine.begin() as connection:
                connection.execute(
                    text("UPDATE budgets SET updated_at = :now WHERE offer_id = 'probe'"),
                    {"now": utcnow()},
                )
            waits.append(time.perf_counter() - started)
        except Exception as exc:  # counted and reported
            failures.append(type(exc).__name__)
        time.sleep(0.005)
    store.close()


def run(args: argparse.Namespace, module: ModuleType, r: int) -> dict[str, Any]:
    home = Path(args.dir) / f"run{r}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    url = f"sqlite:///{home / 'offers.db'}"
    _populate(url, args.sessions, args.expired)
    store = open_store(url, migrate_schema=False, sqlite_synchronous="FULL")
    commits = [0]
    event.listen(store.engine, "commit", lambda _c: commits.__setitem__(0, commits[0] + 1))
    stop = threading.Event()
    waits: list[float] = []
    failures: list[str] = []
    probe = threading.Thread(target=_probe, args=(url, stop, waits, failures))
    probe.start()
    time.sleep(0.5)
    before = len(waits)
    batching = "batch" in inspect.signature(module.sweep).parameters
    kwargs = {"batch": args.batch, "pause": args.pause} if batching else {}
    started, cpu = time.perf_counter(), time.thread_time()
    result = module.sweep(
        store.engine, utcnow() + timedelta(seconds=1), 0, args.sessions + args.expired, **kwargs
    )
    cpu, seconds = time.thread_time() - cpu, time.perf_counter() - started
    stop.set()
    probe.join()
    store.close()
    during = sorted(waits[before:]) or [0.0]
    shutil.rmtree(home, ignore_errors=True)
    return {
        "sweep_s": round(seconds, 3),
        "sweep_cpu_s": round(cpu, 3),
        "transactions": commits[0],
        "abandoned": result.abandoned_sessions,
        "expired": result.expired_grants,
        "probe_writes": len(during),
        "probe_max_ms": round(1000 * during[-1], 1),
        "probe_p99_ms": round(1000 * during[int(0.99 * (len(during) - 1))], 1),
        "probe_over_250ms": sum(w > 0.25 for w in during),  # the serving lock wait
        "probe_failures": len(failures),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--expired", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--before", help="git revision whose sessions.py also sweeps")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/sweep-bench")
    args = parser.parse_args()
    variants = {f"batch {args.batch} pause {args.pause}": current}
    if args.before:
        variants = {f"before {args.before}": _before(args.before), **variants}
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    for r in range(args.runs):
        for label, module in variants.items():
            rows[label].append(run(args, module, r))
            print(json.dumps({"variant": label, "run": r, **rows[label][-1]}), flush=True)
    medians = {}
    for label, got in rows.items():
        medians[label] = {k: statistics.median(x[k] for x in got) for k in got[0] if k != "loadavg"}
        print(json.dumps({"variant": label, "median": medians[label]}), flush=True)
    if args.before:
        base, new = medians[f"before {args.before}"], medians[next(reversed(variants))]
        ratios = {k: round(new[k] / base[k], 4) for k in new if base[k]}
        print(json.dumps({"ratio_current_to_before": ratios}), flush=True)


if __name__ == "__main__":
    main()
