"""In-process CPU cost of folding the checkout basket into the member's affinity.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/checkout_foldin.py --home /tmp/bench-home \\
        [--members 200] [--number 200] [--repeat 7] [--force]

Builds the serving bundle of a home trained by ``offers demo --no-serve`` (the same settings
as its ``serve_command``), then times ``ServingBundle.decide_one`` for the same members and
basket with and without the basket's categories (``timeit``, CPU time of this thread, median
of ``--repeat`` interleaved runs of ``--number`` calls; the added cost is the median of the
per-run differences), and ``FoldIn.p_redeem`` alone, for known
members and for an unknown one. ``--force`` builds the fold-in even when the shipped model's
scores do not use ALS (the bundle then serves without it; the cost is the same). Prints one
JSON line: microseconds per call and the ratio with / without the basket.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import timeit
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # bench/features.py must not shadow the features package
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench.checkout_foldin")
BASKET = ("category:coffee", "category:bakery", "category:grocery", "product:sku-coffee-1")


def _bundle(home: Path, force: bool):
    from bench.load import demo_env
    from models.affinity import FoldIn
    from serving.api.bundle import build_bundle
    from serving.api.modelset import ModelHolder
    from serving.engine.adapters import python_model
    from serving.loader import lkg_loader
    from serving.settings import Settings

    env = demo_env(home)
    if not env:
        raise SystemExit(f"--home {home}: not a home trained by `offers demo`")
    os.environ.update(env)
    models = ModelHolder(
        json.loads(env["OFFERS_MODELS"]),
        lkg_loader(env["MLFLOW_TRACKING_URI"], home / "serving" / "models"),
    ).reload()
    bundle = build_bundle(models, Settings(data={"home": home}))
    if bundle.foldin is None and force:
        aff = python_model(models.models["affinity"].model)
        fold = FoldIn.from_pyfunc(aff, bundle.offer_ids, bundle.members.ids)
        bundle = replace(bundle, foldin=fold)
    if bundle.foldin is None:
        raise SystemExit("the bundle has no fold-in (the model's scores do not use ALS): --force")
    return bundle


def _us(fn, number: int) -> float:
    """CPU time of this thread per call, in microseconds, over ``number`` calls."""
    return timeit.Timer(fn, timer=time.thread_time).timeit(number=number) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--number", type=int, default=200, help="calls per timed run")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs (median)")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from serving.engine import DecisionContext

    bundle = _bundle(args.home, args.force)
    ids = [str(x) for x in bundle.members.ids[: args.members]]
    now = pd.Timestamp.now()
    fold = bundle.foldin
    rows = bundle.rows(ids)
    cycle = {"i": 0}

    def member() -> str:
        cycle["i"] = (cycle["i"] + 1) % len(ids)
        return ids[cycle["i"]]

    def decide(basket):
        def call() -> None:
            m = member()
            bundle.decide_one(
                m, DecisionContext("checkout", now, f"b-{m}"), basket_total=30.0, basket=basket
            )

        return call

    def unknown(basket):
        def call() -> None:
            ctx = DecisionContext("checkout", now, "walk-in")
            bundle.decide_one("walk-in", ctx, basket_total=30.0, basket=basket)

        return call

    def fold_known() -> None:
        fold.p_redeem(int(rows[cycle["i"] % len(rows)]), BASKET)
        cycle["i"] += 1

    out = {
        "members": len(ids),
        "factors": int(fold.y.shape[1]),
        "items": int(fold.y.shape[0]),
        "offers": fold.n_offers,
        "basket": list(BASKET),
        "load_average": os.getloadavg()[0],
    }
    calls = {
        "decide_one_no_basket_us": decide(None),
        "decide_one_basket_us": decide(BASKET),
        "foldin_known_us": fold_known,
        "foldin_unknown_us": lambda: fold.p_redeem(-1, BASKET),
        "decide_one_unknown_no_basket_us": unknown(None),
        "decide_one_unknown_basket_us": unknown(BASKET),
    }
    runs: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm
    for _ in range(args.repeat):  # interleaved: a paired difference per round
        for name, fn in calls.items():
            runs[name].append(_us(fn, args.number))
    for name, values in runs.items():
        out[name] = round(float(np.median(values)), 1)
    for who, a, b in (
        ("known", "decide_one_basket_us", "decide_one_no_basket_us"),
        ("unknown", "decide_one_unknown_basket_us", "decide_one_unknown_no_basket_us"),
    ):
        diff = np.subtract(runs[a], runs[b])
        out[f"added_us_{who}"] = round(float(np.median(diff)), 1)
        out[f"ratio_{who}"] = round(float(np.median(np.divide(runs[a], runs[b]))), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
