"""``offers score`` computes member features with the configuration stored with the uplift
model (``meta["feature_config"]``), not the default one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from features.pipeline.config import FeatureConfig
from features.pipeline.output import write_member_snapshot
from features.sim.simulate import simulate
from serving.batch import ScorerError, SyntheticScorer, scorer_feature_config
from serving.batch.scorers import ModelScorer, _Bound


@dataclass
class _UpliftModel:
    meta_: dict[str, Any] = field(default_factory=dict)


class _Loaded:
    """Like a loaded MLflow pyfunc: the PythonModel behind ``unwrap_python_model``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def unwrap_python_model(self) -> Any:
        return self.model


CUSTOM = FeatureConfig(windows_days=(7, 60), categories=("coffee", "bakery"))


def _scorer(uplift: Any) -> ModelScorer:
    return ModelScorer(affinity=None, uplift=uplift, versions={})


def test_feature_config_read_from_the_uplift_model():
    meta = {"feature_config": CUSTOM.model_dump(mode="json")}
    assert scorer_feature_config(_scorer(_Bound(_UpliftModel(meta)))) == CUSTOM
    assert scorer_feature_config(_scorer(_Loaded(_UpliftModel(meta)))) == CUSTOM
    assert scorer_feature_config(_scorer(_Loaded(_UpliftModel({})))) is None
    assert scorer_feature_config(SyntheticScorer()) is None


def test_a_bad_stored_feature_config_is_named():
    meta = {"feature_config": {"windows_days": [30, 7]}}
    with pytest.raises(ScorerError, match="feature_config"):
        scorer_feature_config(_scorer(_Bound(_UpliftModel(meta))))


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("prog") / "data"
    simulate(150, seed=4).write(out)
    return out


def test_write_member_snapshot_uses_the_given_configuration(tmp_path, program_dir):
    send = pd.Timestamp("2026-10-20")
    default, custom = tmp_path / "default.parquet", tmp_path / "custom.parquet"
    n_default = write_member_snapshot(program_dir, send, default)
    n_custom = write_member_snapshot(program_dir, send, custom, CUSTOM)
    assert n_default == n_custom > 0
    d, c = pd.read_parquet(default), pd.read_parquet(custom)
    assert {"n_purchases_7d", "n_purchases_60d", "share_coffee", "share_bakery"} <= set(c)
    assert "n_purchases_7d" not in d and "n_purchases_30d" in d
    assert "n_purchases_30d" not in c
    shares = sorted(x for x in c.columns if x.startswith("share_"))
    assert shares == ["share_bakery", "share_coffee", "share_other"]
