"""Small, seeded hyper-parameter search on the validation window.

ALS and BPR: the default configuration first, then ``trials - 1`` distinct configurations drawn
with ``numpy.random.default_rng(seed)`` from the spaces below. BPR is a comparison in the report,
never shipped: ``SearchSettings.compare_bpr`` (``auto``: only for programs of at most
``bpr_auto_max_members`` members) says whether it is searched at all. ALS is fitted before BPR
and neither shares a random state with the other, so the shipped blend is the same either way.
The blend: a grid of weights over the best ALS in two stages: frequency x ALS x popularity
weights first (pure popularity included, so the blend can fall back to it where nothing personal
helps), then recency x popularity weights around the best frequency/ALS pair. Components are
computed once per member batch and every weight combination is ranked from them. Selection
metric: ``ndcg@10`` (``SearchSettings.metric``); ties keep the earlier configuration.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.affinity import ALS, BPR, AffinityModel, Blend, top_k
from training.affinity.evaluate import Task, evaluate_model
from training.affinity.metrics import KS, ranking_metrics

__all__ = [
    "ALS_DEFAULT",
    "ALS_SPACE",
    "BLEND_GRID",
    "BPR_DEFAULT",
    "BPR_SPACE",
    "SearchResult",
    "SearchSettings",
    "bpr_compared",
    "sample_configs",
    "search",
]

log = logging.getLogger(__name__)

ALS_DEFAULT: dict[str, Any] = {
    "factors": 64,
    "regularization": 0.05,
    "alpha": 1.0,
    "weighting": "bm25",
    "iterations": 15,
}
ALS_SPACE: dict[str, list[Any]] = {
    "factors": [16, 32, 64, 128],
    "regularization": [0.01, 0.05, 0.1, 0.5],
    "alpha": [0.5, 1.0, 2.0, 5.0],
    "weighting": ["bm25", "none"],
    "iterations": [15],
}
BPR_DEFAULT: dict[str, Any] = {
    "factors": 64,
    "learning_rate": 0.05,
    "regularization": 0.01,
    "iterations": 100,
}
BPR_SPACE: dict[str, list[Any]] = {
    "factors": [32, 64, 128],
    "learning_rate": [0.01, 0.05, 0.1],
    "regularization": [0.001, 0.01, 0.1],
    "iterations": [50, 100, 200],
}
BLEND_GRID: dict[str, list[float]] = {
    "freq_weight": [0.0, 1.0],
    "als_weight": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
    "recency_weight": [0.0, 0.5, 1.0],
    "popularity_weight": [0.0, 0.5, 2.0, 8.0],
}

Progress = Callable[[str, int, int], None]

# compare_bpr="auto": BPR is searched, fitted and reported for programs up to this many members.
# The same size as the search's default member sample: every program whose search is not
# sampled (and every data set of the quality figures in docs/benchmarks.md) keeps its BPR
# column; above it BPR's 4 fits took 131 of the 293 CPU s of a 200,000-member training.
BPR_AUTO_MAX_MEMBERS = 200_000


class SearchSettings(BaseModel):
    """Budget and seed of the validation search."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    als_trials: int = Field(default=6, ge=1)
    bpr_trials: int = Field(default=3, ge=1)
    seed: int = 0
    metric: str = "ndcg@10"
    num_threads: int = Field(default=1, ge=0)
    # the search (and the validation metrics and calibration) run on a seeded uniform sample
    # of this many validation training members when there are more (None: all of them)
    max_members: int | None = Field(default=200_000, ge=1)
    # the blend's ALS weight is searched from this value up: checkout folds the basket into the
    # member's ALS factors, which changes nothing when the chosen weight is 0 (0: no floor)
    min_als_weight: float = Field(default=0.0, ge=0, le=4.0)
    als_fixed: dict[str, Any] | None = None  # skip the ALS search, use these parameters
    bpr_fixed: dict[str, Any] | None = None
    # BPR is reported next to the shipped ALS blend, never shipped: on, off, or auto (on for
    # programs of at most bpr_auto_max_members members; see BPR_AUTO_MAX_MEMBERS)
    compare_bpr: Literal["auto", "on", "off"] = "auto"
    bpr_auto_max_members: int = Field(default=BPR_AUTO_MAX_MEMBERS, ge=1)


def bpr_compared(settings: SearchSettings, members: int) -> bool:
    """Whether BPR is searched, fitted and reported for a program of ``members`` members."""
    if settings.compare_bpr == "auto":
        return members <= settings.bpr_auto_max_members
    return settings.compare_bpr == "on"


@dataclass
class SearchResult:
    """Best parameters per searched model and every trial's validation metrics."""

    als: dict[str, Any]
    bpr: dict[str, Any] | None  # None: BPR not compared (SearchSettings.compare_bpr)
    blend: dict[str, float]
    trials: list[dict[str, Any]] = field(default_factory=list)
    fitted: dict[str, AffinityModel] = field(default_factory=dict)  # best, on validation data


def sample_configs(
    space: dict[str, list[Any]], n: int, seed: int, default: dict[str, Any]
) -> list[dict[str, Any]]:
    """The default, then up to ``n - 1`` distinct random configurations from ``space``."""
    rng = np.random.default_rng(seed)
    keys = sorted(space)
    total = int(np.prod([len(space[k]) for k in keys]))
    out = [dict(default)]
    seen = {tuple(default.get(k) for k in keys)}
    while len(out) < min(n, total + 1):
        cfg = {k: space[k][int(rng.integers(len(space[k])))] for k in keys}
        sig = tuple(cfg[k] for k in keys)
        if sig in seen:
            if len(seen) >= total:
                break
            continue
        seen.add(sig)
        out.append(cfg)
    return out


def _fit_eval(
    model: AffinityModel, task: Task, ks: tuple[int, ...]
) -> tuple[AffinityModel, dict[str, float]]:
    model.fit(task.train)
    return model, evaluate_model(model, task, ks)


def search(
    task: Task,
    settings: SearchSettings,
    ks: tuple[int, ...] = KS,
    progress: Progress | None = None,
    compare_bpr: bool | None = None,
) -> SearchResult:
    """Choose ALS, BPR and blend parameters on the validation ``task``.

    ``compare_bpr`` None: :func:`bpr_compared` on the task's training members (before any
    sampling); False: no BPR trial (``SearchResult.bpr`` is None)."""
    if compare_bpr is None:
        compare_bpr = bpr_compared(settings, task.sampled_from or task.train.n_members)
    metric = settings.metric
    common: dict[str, Any] = {"random_state": settings.seed, "num_threads": settings.num_threads}
    trials: list[dict[str, Any]] = []
    best: dict[str, tuple[float, dict[str, Any], AffinityModel | None]] = {}
    plans = []
    for name, cls, fixed, space, default, n in (
        ("als", ALS, settings.als_fixed, ALS_SPACE, ALS_DEFAULT, settings.als_trials),
        ("bpr", BPR, settings.bpr_fixed, BPR_SPACE, BPR_DEFAULT, settings.bpr_trials),
    ):
        if name == "bpr" and not compare_bpr:
            continue
        configs = [fixed] if fixed is not None else sample_configs(space, n, settings.seed, default)
        plans += [(name, cls, cfg) for cfg in configs]
    for i, (name, cls, cfg) in enumerate(plans):
        if progress:
            progress("search", i, len(plans) + 1)
        model, metrics = _fit_eval(cls(**cfg, **common), task, ks)
        trials.append({"model": name, "params": cfg, **metrics})
        log.info("valid %s %s: %s=%.4f", name, cfg, metric, metrics[metric])
        if name not in best or metrics[metric] > best[name][0]:
            best[name] = (metrics[metric], cfg, model)
    als = best["als"][2]
    assert isinstance(als, ALS)
    blend, blend_trials = _blend_grid(als, task, metric, ks, settings.min_als_weight)
    trials += blend_trials
    if progress:
        progress("search", len(plans) + 1, len(plans) + 1)
    return SearchResult(
        als=best["als"][1],
        bpr=best["bpr"][1] if "bpr" in best else None,
        blend=blend,
        trials=trials,
        fitted={name: b[2] for name, b in best.items() if b[2] is not None},
    )


def _grid(keys: tuple[str, ...], fixed: dict[str, float]) -> list[dict[str, float]]:
    combos = [
        {**fixed, **dict(zip(keys, c, strict=True))}
        for c in itertools.product(*(BLEND_GRID[k] for k in keys))
    ]
    return [c for c in combos if any(c.values())]


def _rank_combos(
    blend: Blend, task: Task, combos: list[dict[str, float]], kmax: int
) -> list[np.ndarray]:
    ranked: list[list[np.ndarray]] = [[] for _ in combos]
    for lo in range(0, len(task.rows), 256):
        rows = task.rows[lo : lo + 256]
        elig = None if task.eligible is None else task.eligible[lo : lo + 256]
        parts = blend.components(task.batch(rows), task.candidates)
        for j, c in enumerate(combos):
            ranked[j].append(top_k(Blend.combine(parts, **c), task.candidates, kmax, elig).items)
    return [np.vstack(r) for r in ranked]


def _blend_grid(
    als: ALS, task: Task, metric: str, ks: tuple[int, ...], min_als_weight: float = 0.0
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Two-stage grid over ``BLEND_GRID`` on the validation task (see module docstring); ALS
    weights below ``min_als_weight`` are not tried."""
    blend = Blend.from_als(als, task.train)
    trials: list[dict[str, Any]] = []
    best_value, best = -np.inf, dict[str, float]()
    stage1 = [
        c
        for c in _grid(("freq_weight", "als_weight", "popularity_weight"), {"recency_weight": 0.0})
        if c["als_weight"] >= min_als_weight
    ]
    for stage in (1, 2):
        combos = (
            stage1
            if stage == 1
            else _grid(
                ("recency_weight", "popularity_weight"),
                {"freq_weight": best["freq_weight"], "als_weight": best["als_weight"]},
            )
        )
        for c, r in zip(combos, _rank_combos(blend, task, combos, max(ks)), strict=True):
            metrics = ranking_metrics(r, task.relevant, ks, task.n_relevant)
            trials.append({"model": "blend", "params": c, **metrics})
            if metrics[metric] > best_value:
                best_value, best = metrics[metric], c
    log.info("valid blend best %s: %s=%.4f", best, metric, best_value)
    return best, trials
