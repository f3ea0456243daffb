"""Does folding the first basket in help? The Complete Journey, products, chronological split.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/foldin_cj.py \\
        [--src ../shared/data/complete-journey] [--split 2017-10-30T04:00:00] [--json OUT]

Protocol (the products split of docs/benchmarks.md "Affinity"): models are trained on every
interaction before ``--split`` (offer events and products bought, ``InteractionSettings`` with
``purchase_items="product"``). For each member with training history and at least two baskets
in the test window ``[split, end)``, the *first* basket of the window is the checkout context;
the products bought in the member's *later* baskets are relevant (``rest``; ``rest_new`` counts
only products not in that first basket). Every product seen in training is a candidate.

Compared, recall@10 (hits / min(10, relevant), the benchmark's convention) and precision@10,
with a paired standard error against the shipped model without fold-in:

* ``blend`` / ``blend+basket``: the shipped configuration for this target (freq 1, ALS 0.5,
  recency 0, popularity 0.5; ALS 64 factors, reg 0.05, alpha 1, BM25) without / with the
  first basket folded in (``basket_rows`` + ``as_new_members``: the pyfunc's offline fold-in,
  the same computation as serving's ``FoldIn``);
* ``als`` / ``als+basket``: ALS alone, the part the fold-in changes;
* ``blend+refold`` / ``als+refold``: the history alone folded in (no basket): separates what
  solving the member's factors again does from what the basket adds;
* ``buy_again`` / ``buy_again+basket``: personal popularity on the history, and with the first
  basket counted as one more (most recent) purchase;
* ``basket_only``: an unknown member with only the first basket (fold-in of the basket alone),
  against ``popularity`` (what such a member got before: the global fallback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # bench/features.py must not shadow the features package
    sys.path.insert(0, str(ROOT))

from features.sources import schema as S  # noqa: E402
from models.affinity import (  # noqa: E402
    ALS,
    Blend,
    Interactions,
    InteractionSettings,
    PersonalPopularity,
    Popularity,
    as_new_members,
    basket_rows,
    build_interactions,
    item_key,
    top_k,
)

log = logging.getLogger("bench.foldin_cj")
K = 10
SHIPPED_ALS = {"factors": 64, "regularization": 0.05, "alpha": 1.0, "weighting": "bm25"}
SHIPPED_BLEND = {"freq_weight": 1.0, "als_weight": 0.5, "recency_weight": 0.0}
SHIPPED_BLEND["popularity_weight"] = 0.5


def windows(tx: pd.DataFrame, split: pd.Timestamp) -> pd.DataFrame:
    """(member, first basket id, first basket products, later products) per member with at
    least two baskets in the window."""
    w = tx.loc[(tx[S.TS] >= split) & (tx[S.AMOUNT] > 0) & tx[S.SKU].notna()]
    if S.QUANTITY in w.columns:
        w = w.loc[~(w[S.QUANTITY] <= 0)]
    first_ts = w.groupby(S.TRANSACTION_ID)[S.TS].min().rename("bts")
    w = w.join(first_ts, on=S.TRANSACTION_ID)
    order = w.sort_values(["bts", S.TRANSACTION_ID])
    first = order.groupby(S.MEMBER_ID)[S.TRANSACTION_ID].first().rename("first_tx")
    w = w.join(first, on=S.MEMBER_ID)
    is_first = w[S.TRANSACTION_ID] == w["first_tx"]
    basket = w.loc[is_first].groupby(S.MEMBER_ID)[S.SKU].agg(lambda s: sorted(set(s)))
    later = w.loc[~is_first].groupby(S.MEMBER_ID)[S.SKU].agg(lambda s: sorted(set(s)))
    out = pd.DataFrame({"basket": basket, "later": later}).dropna()
    return out


def scores_of(model, batch: Interactions, items: np.ndarray, size: int = 256):
    """Top-``K`` items per member of ``batch`` among ``items``, in chunks."""
    out = []
    for a in range(0, batch.n_members, size):
        part = batch.take(np.arange(a, min(a + size, batch.n_members)))
        out.append(top_k(model.score(part, items), items, K).items)
    return np.vstack(out)


def metrics(top: np.ndarray, relevant: list[set[int]]) -> dict[str, np.ndarray]:
    hits = np.array([len(set(t[t >= 0].tolist()) & r) for t, r in zip(top, relevant, strict=True)])
    denom = np.array([min(K, len(r)) for r in relevant])
    return {"recall@10": hits / np.maximum(denom, 1), "precision@10": hits / K}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared/data/complete-journey")
    ap.add_argument("--split", default="2017-10-30T04:00:00")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.time()
    from features.sources.adapters.complete_journey import convert

    tables = convert(args.src)
    frames = {
        "offers": tables.offers,
        "offer_events": tables.offer_events,
        "transactions": tables.transactions,
    }
    split = pd.Timestamp(args.split)
    settings = InteractionSettings(purchase_items="product")
    train = build_interactions(frames, split, settings)
    log.info(
        "train: %d members x %d items (%.0f s)", train.n_members, train.n_items, time.time() - t0
    )
    win = windows(tables.transactions, split)
    win.index = win.index.astype(str)
    rows = train.member_index(win.index.to_numpy())
    keep = rows >= 0
    n_cold = int((~keep).sum())
    win, rows = win.loc[keep], rows[keep]
    products = train.items_of_kind("product")
    col = pd.Index(train.item_ids)

    def cols_of(skus: list[str]) -> set[int]:
        idx = col.get_indexer(pd.Index(item_key("product", np.asarray(skus, dtype=str))))
        return set(idx[idx >= 0].tolist())

    rest = [cols_of(x) for x in win["later"]]
    first = [cols_of(x) for x in win["basket"]]
    rest_new = [r - f for r, f in zip(rest, first, strict=True)]
    ok = np.array([len(r) > 0 for r in rest])
    win, rows = win.loc[ok], rows[ok]
    rest = [r for r, o in zip(rest, ok, strict=True) if o]
    rest_new = [r for r, o in zip(rest_new, ok, strict=True) if o]
    baskets = [list(b) for b in win["basket"]]
    log.info("members: %d evaluated, %d without training history", len(rows), n_cold)

    t1 = time.time()
    als = ALS(random_state=args.seed, **SHIPPED_ALS).fit(train)
    blend = Blend.from_als(als, train, **SHIPPED_BLEND)
    fit_s = time.time() - t1
    log.info("ALS fitted in %.0f s", fit_s)
    base = train.take(rows)
    with_basket = basket_rows(base, baskets, kind="product")
    folded = as_new_members(with_basket)
    empty = Interactions.from_matrix(
        np.zeros((len(rows), train.n_items), dtype=np.float32), item_ids=train.item_ids
    )
    basket_only = as_new_members(basket_rows(empty, baskets, kind="product"))
    runs = {
        "blend": (blend, base),
        "blend+refold": (blend, as_new_members(base)),
        "blend+basket": (blend, folded),
        "als": (als, base),
        "als+refold": (als, as_new_members(base)),
        "als+basket": (als, folded),
        "buy_again": (PersonalPopularity().fit(train), base),
        "buy_again+basket": (PersonalPopularity().fit(train), with_basket),
        "basket_only": (blend, basket_only),
        "popularity": (Popularity().fit(train), base),
    }
    report: dict = {
        "split": str(split),
        "members": len(rows),
        "members_without_history": n_cold,
        "candidates": len(products),
        "mean_basket_products": float(np.mean([len(b) for b in baskets])),
        "mean_rest_products": float(np.mean([len(r) for r in rest])),
        "mean_rest_new_products": float(np.mean([len(r) for r in rest_new])),
        "als_fit_seconds": round(fit_s, 1),
        "models": {},
    }
    per_member: dict[str, dict[str, np.ndarray]] = {}
    for name, (model, batch) in runs.items():
        t2 = time.time()
        top = scores_of(model, batch, products)
        for target, rel in (("rest", rest), ("rest_new", rest_new)):
            m = metrics(top, rel)
            if target == "rest_new":  # members with a new product in the rest of the window
                has = np.array([len(r) > 0 for r in rel])
                m = {k: v[has] for k, v in m.items()}
            per_member[f"{name}/{target}"] = m["recall@10"]
            report["models"].setdefault(name, {})[target] = {
                k: round(float(v.mean()), 4) for k, v in m.items()
            }
        log.info("%s: %s (%.0f s)", name, report["models"][name], time.time() - t2)
    for target in ("rest", "rest_new"):
        ref = per_member[f"blend/{target}"]
        for name in runs:
            d = per_member[f"{name}/{target}"] - ref
            report["models"][name][target]["vs_blend"] = {
                "mean": round(float(d.mean()), 4),
                "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4),
            }
    report["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(report)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
