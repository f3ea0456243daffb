"""A small affinity blend registered under one name with a given metric (registry gate tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.affinity import ALS, Blend, Interactions
from models.affinity.pyfunc import ENTRY_POINT, input_example, save_artifacts, signature
from training.affinity.train import requirements
from training.registry import Gate, ModelRegistry

NAME = "offers-affinity"
GATE = Gate("ndcg@10")


def small_blend_artifacts(out: Path):
    """A small fitted blend (offers + categories) and its arrays."""
    items = [f"offer:o{i}" for i in range(4)] + [f"category:c{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    x = np.zeros((30, 10), dtype=np.float32)
    x[:20, [0, 1, 4, 5, 6]] = 1.0
    x[20:, [2, 3, 7, 8, 9]] = 1.0
    x *= rng.uniform(0.5, 2.0, size=x.shape).astype(np.float32)
    data = Interactions.from_matrix(x, item_ids=items, segments=["gold|active"] * 30)
    als = ALS(factors=4, iterations=10, weighting="none").fit(data)
    model = Blend.from_als(als, data, freq_weight=1.0, als_weight=1.0, segment_min_members=5)
    return save_artifacts(model, data, out), data


def register_version(registry: ModelRegistry, artifacts, ndcg: float, window: str) -> str:
    arts, data = artifacts
    return registry.log_and_register(
        NAME,
        python_model=ENTRY_POINT,
        artifacts=arts,
        signature=signature(),
        input_example=input_example(list(data.member_ids[:2]), ["o0", "o2"]),
        params={"factors": 4, "window": window},
        metrics={"ndcg@10": ndcg, "recall@10": ndcg / 2},
        test_window=window,
        pip_requirements=requirements(),  # explicit: no slow inference subprocess
    )
