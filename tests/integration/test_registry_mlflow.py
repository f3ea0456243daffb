"""The registry gate against a real ``mlflow server`` on loopback (sqlite store, local artifacts):
register, gate, promote, force-promote, roll back, and load ``models:/offers-affinity@champion``."""

from __future__ import annotations

import os

import pandas as pd
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tests.support.registry import GATE, NAME, register_version
from training.registry import CHALLENGER, CHAMPION, ModelRegistry, RegistryError

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_register_gate_promote_rollback_and_load(
    mlflow_server, registry_artifacts, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    registry = ModelRegistry(home=tmp_path)
    assert registry.tracking_uri == mlflow_server

    v1 = register_version(registry, registry_artifacts, 0.50, "w1")
    assert registry.version_of(NAME, CHALLENGER) == v1
    first = registry.gate(NAME, v1, GATE)
    assert first.promoted and registry.version_of(NAME, CHAMPION) == v1

    v2 = register_version(registry, registry_artifacts, 0.45, "w1")  # worse on the same window
    d2 = registry.gate(NAME, v2, GATE)
    assert not d2.promoted and d2.champion_value == pytest.approx(0.50)
    assert registry.version_of(NAME, CHAMPION) == v1
    assert registry.version_of(NAME, CHALLENGER) == v2

    v3 = register_version(registry, registry_artifacts, 0.60, "w1")  # better: promoted
    assert registry.gate(NAME, v3, GATE).promoted
    assert registry.version_of(NAME, CHAMPION) == v3

    v4 = register_version(
        registry, registry_artifacts, 0.99, "w2"
    )  # another window, nothing to re-score with
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

    mlflow.set_tracking_uri(mlflow_server)
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


def test_unknown_version_is_named(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    registry = ModelRegistry(home=tmp_path)
    with pytest.raises(RegistryError, match="no registered model named 'nope'"):
        registry.promote("nope", "1")
