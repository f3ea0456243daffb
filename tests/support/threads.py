"""Run a function in many threads released together (concurrency tests of the store)."""

from __future__ import annotations

import threading


def run_concurrently(n: int, target) -> list:
    """Run ``target(i)`` in ``n`` threads released together; return results in order."""
    barrier = threading.Barrier(n, timeout=60)
    results: list = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    return results
