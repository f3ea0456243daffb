"""Ranking metrics at k: precision, recall, NDCG, MAP, and catalog coverage (pure functions).

Conventions (binary relevance; ``n_rel`` = the member's number of relevant items):

* ``precision@k`` = hits in the top k / k;
* ``recall@k`` = hits in the top k / min(k, n_rel): the capped recall of implicit's
  ``ranking_metrics_at_k``, so a perfect ranking scores 1 at every k even for members with
  hundreds of relevant products (plain hits / n_rel would cap at k / n_rel);
* ``ndcg@k`` = DCG (gain 1 / log2(position + 1)) over the ideal DCG of min(k, n_rel) hits;
* ``map@k`` = sum of precision@i at each hit position i <= k, over min(k, n_rel);
* ``catalog_coverage@k`` = distinct items in anyone's top k / number of candidate items.

Metrics are averaged over members; every member must have at least one relevant item.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["KS", "MetricInputError", "catalog_coverage", "hit_matrix", "ranking_metrics"]

KS: tuple[int, ...] = (1, 3, 5, 10)


class MetricInputError(ValueError):
    """Inputs to a metric are inconsistent (shapes, k, members without relevant items)."""


def hit_matrix(ranked: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Bool (n x K): whether the item at each rank is relevant (-1 padding never is)."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise MetricInputError(f"ranked must be 2-d (members x K), got shape {ranked.shape}")
    if relevant.shape[0] != ranked.shape[0]:
        raise MetricInputError(
            f"relevant has {relevant.shape[0]} rows for {ranked.shape[0]} ranked members"
        )
    if ranked.size and ranked.max() >= relevant.shape[1]:
        raise MetricInputError(
            f"ranked item {int(ranked.max())} outside the {relevant.shape[1]} relevance columns"
        )
    valid = ranked >= 0
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    cols = np.where(valid, ranked, 0).ravel()
    hits = np.asarray(relevant.tocsr()[rows, cols]).reshape(ranked.shape) > 0
    return hits & valid


def ranking_metrics(
    ranked: np.ndarray,
    relevant: sp.csr_matrix,
    ks: tuple[int, ...] = KS,
    n_relevant: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean precision/recall/NDCG/MAP at each k over members (see module docstring).

    ``n_relevant`` overrides the per-member relevant count (e.g. when some relevant items are
    outside the ranked catalogue and therefore absent from ``relevant``).
    """
    hits = hit_matrix(ranked, relevant)
    n, depth = hits.shape
    if not ks or min(ks) < 1 or max(ks) > depth:
        raise MetricInputError(f"ks must lie in 1..{depth} (the ranking depth), got {ks}")
    n_rel = np.diff(relevant.tocsr().indptr) if n_relevant is None else np.asarray(n_relevant)
    if len(n_rel) != n:
        raise MetricInputError(f"n_relevant has {len(n_rel)} entries for {n} members")
    if n == 0:
        raise MetricInputError("no members to evaluate")
    if (n_rel < 1).any():
        bad = np.flatnonzero(n_rel < 1)[:5]
        raise MetricInputError(f"members without a relevant item (rows {bad.tolist()})")
    pos = np.arange(1, depth + 1)
    discount = 1.0 / np.log2(pos + 1)
    cum_hits = np.cumsum(hits, axis=1)
    prec_at_i = cum_hits / pos
    out: dict[str, float] = {}
    for k in ks:
        h = hits[:, :k]
        denom = np.minimum(k, n_rel)
        dcg = (h * discount[:k]).sum(axis=1)
        ideal = np.cumsum(discount[:k])[denom - 1]
        out[f"precision@{k}"] = float(np.mean(cum_hits[:, k - 1] / k))
        out[f"recall@{k}"] = float(np.mean(cum_hits[:, k - 1] / denom))
        out[f"ndcg@{k}"] = float(np.mean(dcg / ideal))
        out[f"map@{k}"] = float(np.mean((h * prec_at_i[:, :k]).sum(axis=1) / denom))
    return out


def catalog_coverage(ranked: np.ndarray, k: int, n_candidates: int) -> float:
    """Share of the candidate items that appear in at least one member's top k."""
    if n_candidates < 1:
        raise MetricInputError(f"n_candidates must be >= 1, got {n_candidates}")
    if k < 1 or k > np.asarray(ranked).shape[1]:
        raise MetricInputError(f"k must lie in 1..{np.asarray(ranked).shape[1]}, got {k}")
    top = np.asarray(ranked)[:, :k]
    return float(len(np.unique(top[top >= 0])) / n_candidates)
