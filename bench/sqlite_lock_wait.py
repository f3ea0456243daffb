"""How often SQLite writers give up at a given lock wait (``OFFERS_STORE_LOCK_WAIT_SECONDS``).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/sqlite_lock_wait.py \\
        [--waits 0.25,0.5,1,30] [--procs 2] [--threads 2] [--batches 100]

For each lock wait: ``--procs`` processes with ``--threads`` threads each commit ``--batches``
batches of 5 feedback events, back to back, into one fresh SQLite file (WAL, synchronous=FULL,
the serving store's settings). Prints the batches stored, the batches that failed with
"database is locked" (a 503 in the API) and the wall time. Continuous back-to-back commits are
the worst case: the serving writers (grant groups, decision log) commit in groups.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from serving.store import open_store

log = logging.getLogger("sqlite_lock_wait")


def _writer(path: str, tag: str, threads: int, batches: int, wait: float, out: mp.Queue) -> None:
    store = open_store(f"sqlite:///{path}", migrate_schema=False, lock_wait_seconds=wait)
    counts = {"stored": 0, "locked": 0}
    guard = threading.Lock()

    def loop(t: int) -> None:
        for i in range(batches):
            events = [
                {"event_id": f"{tag}-{t}-{i}-{j}", "member_id": "m", "offer_id": "o",
                 "event": "viewed"}
                for j in range(5)
            ]  # fmt: skip
            try:
                store.record_events(events)
                outcome = "stored"
            except OperationalError:
                outcome = "locked"
            with guard:
                counts[outcome] += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.close()
    out.put(counts)


def run(wait: float, procs: int, threads: int, batches: int) -> str:
    """One lock wait: a line with stored and locked batches and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "lock.db")
        open_store(f"sqlite:///{path}").close()
        out: mp.Queue = mp.Queue()
        start = time.monotonic()
        processes = [
            mp.Process(target=_writer, args=(path, f"p{p}", threads, batches, wait, out))
            for p in range(procs)
        ]
        for p in processes:
            p.start()
        results = [out.get() for _ in processes]
        for p in processes:
            p.join()
    seconds = time.monotonic() - start
    stored = sum(r["stored"] for r in results)
    locked = sum(r["locked"] for r in results)
    return (
        f"lock wait {wait:g} s, {procs} x {threads} writers: {stored} batches stored, {locked} "
        f"'database is locked' ({locked / (stored + locked):.1%}) in {seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", default="0.25,0.5,1,30")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    if not (1 <= args.procs <= 8 and 1 <= args.threads <= 32 and 1 <= args.batches <= 10_000):
        parser.error("bounded: 1-8 procs, 1-32 threads, 1-10,000 batches")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("alembic", "serving.store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for wait in (float(w) for w in args.waits.split(",")):
        log.info(run(wait, args.procs, args.threads, args.batches))


if __name__ == "__main__":
    main()
