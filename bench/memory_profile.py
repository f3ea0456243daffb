"""Where a command's memory goes: run an ``offers`` command in this process, sample its
resident memory every 0.1 s with the repository frames of the main thread's call stack, and
print the peak per function (the innermost repository frame) and the stack of the overall peak.

The resident set is this process's (DuckDB runs in it); a Spark JVM is not counted. Sampling
costs little (a stack walk every 0.1 s). Run every 1M-member step under an address-space limit
on a shared machine, so that it fails instead of taking the machine's memory:

    OPENBLAS_NUM_THREADS=1 prlimit --as=$((14*1024**3)) -- .venv/bin/python \\
        bench/memory_profile.py --json /tmp/uplift.json -- train uplift --data /work/runs/p1m \\
        --memory-limit 2GB

Prints the table on stderr and writes every sample to ``--json`` when given; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = str(Path(__file__).resolve().parents[1]) + os.sep
GiB = 2**30


class StackSampler:
    """Resident memory and repository call stack of the main thread, every ``every_s``."""

    def __init__(self, every_s: float = 0.1) -> None:
        import psutil

        self._proc = psutil.Process()
        self._main = threading.main_thread().ident
        self._every = every_s
        self._stop = threading.Event()
        self._t0 = time.time()
        self.samples: list[tuple[float, int, list[str]]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _stack(self) -> list[str]:
        frame = sys._current_frames().get(self._main)
        names = []
        while frame is not None:
            path = frame.f_code.co_filename
            if path.startswith(REPO) and f"{os.sep}.venv{os.sep}" not in path:
                names.append(f"{path[len(REPO) :]}:{frame.f_code.co_name}:{frame.f_lineno}")
            frame = frame.f_back
        return names[::-1]  # outermost first

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss
            self.samples.append((round(time.time() - self._t0, 2), rss, self._stack()))
            self._stop.wait(self._every)

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def report(samples: list[tuple[float, int, list[str]]], every_s: float, top: int) -> str:
    """The peak and its stack, then the peak and seconds per innermost repository function."""
    if not samples:
        return "no samples"
    t, peak, stack = max(samples, key=lambda s: s[1])
    lines = [f"peak {peak / GiB:.2f} GiB at {t:.0f} s (wall {samples[-1][0]:.0f} s), stack:"]
    lines += [f"  {frame}" for frame in stack]
    per: dict[str, list[float]] = {}
    for _, rss, st in samples:
        key = ":".join(st[-1].split(":")[:2]) if st else "(no repository frame)"
        acc = per.setdefault(key, [0.0, 0.0])
        acc[0], acc[1] = max(acc[0], rss), acc[1] + every_s
    lines.append("peak GiB  seconds  function")
    for key, (mx, secs) in sorted(per.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{mx / GiB:8.2f} {secs:8.1f}  {key}")
    return "\n".join(lines)


def main() -> None:
    if "--" not in sys.argv:
        sys.exit("usage: memory_profile.py [--json OUT] [--top N] -- <offers arguments>")
    split = sys.argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path, default=None, help="write the samples here")
    p.add_argument("--top", type=int, default=25, help="functions in the table")
    args = p.parse_args(sys.argv[1:split])
    sys.argv = ["offers", *sys.argv[split + 1 :]]
    # bench/features.py would shadow the ``features`` package: import from the repository
    here = Path(__file__).resolve().parent
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != here]
    code: Any = 0
    with StackSampler() as sampler:
        try:
            from offers.cli import main as offers_main

            offers_main()
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # MemoryError included: the profile up to the failure is the point
            traceback.print_exc()
            code = 1
    print(f"\nexit {code}\n{report(sampler.samples, 0.1, args.top)}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(
            json.dumps({"argv": sys.argv, "exit": code, "samples": sampler.samples})
        )
    sys.exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    main()
