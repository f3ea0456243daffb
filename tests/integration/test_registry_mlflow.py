"""The registry gate against a real ``mlflow server`` on loopback (sqlite store, local artifacts):
register, gate, promote, force-promote, roll back, and load ``models:/offers-affinity@champion``."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from models.affinity import ALS, Blend, Interactions
from models.affinity.pyfunc import ENTRY_POINT, input_example, save_artifacts, signature
from tests.integration.server_fixtures import mlflow_server  # noqa: F401  (real tracking server)
from training.affinity_train import requirements
from training.registry import CHALLENGER, CHAMPION, Gate, ModelRegistry, RegistryError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "offers-affinity"
GATE = Gate("ndcg@10")


@pytest.fixture(scope="module")
def server(mlflow_server):  # noqa: F811
    """URL of the module's real tracking server process."""
    return mlflow_server


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
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
    out = tmp_path_factory.mktemp("arrays")
    return save_artifacts(model, data, out), data


def _register(registry: ModelRegistry, artifacts, ndcg: float, window: str) -> str:
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


def test_register_gate_promote_rollback_and_load(server, artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    registry = ModelRegistry(home=tmp_path)
    assert registry.tracking_uri == server

    v1 = _register(registry, artifacts, 0.50, "w1")
    assert registry.version_of(NAME, CHALLENGER) == v1
    first = registry.gate(NAME, v1, GATE)
    assert first.promoted and registry.version_of(NAME, CHAMPION) == v1

    v2 = _register(registry, artifacts, 0.45, "w1")  # worse on the same window
    d2 = registry.gate(NAME, v2, GATE)
    assert not d2.promoted and d2.champion_value == pytest.approx(0.50)
    assert registry.version_of(NAME, CHAMPION) == v1
    assert registry.version_of(NAME, CHALLENGER) == v2

    v3 = _register(registry, artifacts, 0.60, "w1")  # better: promoted
    assert registry.gate(NAME, v3, GATE).promoted
    assert registry.version_of(NAME, CHAMPION) == v3

    v4 = _register(registry, artifacts, 0.99, "w2")  # another window, nothing to re-score with
    d4 = registry.gate(NAME, v4, GATE)
    assert not d4.promoted and "test window" in d4.reason
    rescored = registry.gate(NAME, v4, GATE, rescore_champion=lambda version, window: 0.7)
    assert rescored.promoted and rescored.champion_version == v3

    registry.promote(NAME, v2)  # forced, although it lost its gate
    assert registry.version_of(NAME, CHAMPION) == v2
    assert registry.rollback(NAME) == v4  # back to the champion before the forced one
    assert registry.rollback(NAME) == v3  # and one further
    assert registry.version_of(NAME, CHAMPION) == v3
    assert [h["version"] for h in registry.history(NAME)] == [v1, v3, v4, v2, v4, v3]

    import mlflow

    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    query = pd.DataFrame(
        {
            "member_id": ["m0", "m0", "m0", "walk-in", "walk-in"],
            "offer_id": ["o0", "o2", "nope", "o0", "o2"],
            "basket": [None, None, None, "c4|c5", "c4|c5"],
        }
    )
    out = model.predict(query)
    assert list(out.columns) == ["member_id", "offer_id", "score", "p_redeem", "rank", "fallback"]
    m0 = out.iloc[:3]
    assert m0["rank"].tolist() == [1, 2, 3]  # group A member: o0 first, unknown offer last
    assert m0["fallback"].tolist() == ["personalised", "personalised", "unknown_offer"]
    walk_in = out.iloc[3:]
    assert walk_in.set_index("offer_id")["rank"].to_dict() == {"o2": 1, "o0": 2}  # via basket
    assert (walk_in["fallback"] == "personalised").all()


def test_unknown_version_is_named(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    registry = ModelRegistry(home=tmp_path)
    with pytest.raises(RegistryError, match="no registered model named 'nope'"):
        registry.promote("nope", "1")
