"""The offline half of ``offers demo``: member feature snapshot, both models trained small,
registered and promoted to champion in the local MLflow store under ``OFFERS_HOME``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = [
    "DEMO_UPLIFT_PARAMS",
    "TrainedModel",
    "local_tracking_uri",
    "train_and_promote",
    "write_snapshot",
]

# Small enough that both models train in well under a minute on 2 cores for 10k members.
DEMO_UPLIFT_PARAMS = {"n_estimators": 40, "learning_rate": 0.1, "min_child_samples": 100}
DEMO_REASON = "offers demo"

Step = Callable[[str], None]


@dataclass(frozen=True)
class TrainedModel:
    """One registered model: name, new version, and what the gate and the demo did with it."""

    name: str
    version: str
    gate_promoted: bool
    gate_reason: str
    metric: str
    value: float | None


def local_tracking_uri(home: Path) -> str:
    """The local MLflow store of the demo: ``sqlite:///<OFFERS_HOME>/mlflow.db``."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def write_snapshot(data_dir: Path, as_of: pd.Timestamp, path: Path) -> pd.DataFrame:
    """Member features as of ``as_of`` written to ``path`` (Parquet, the serving snapshot);
    returns them. Written to a temporary file first and moved, so a reader never sees half."""
    from features.pipeline import load_tables, member_features

    frame = member_features(load_tables(data_dir), as_of).to_pandas()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return frame


def train_and_promote(
    data_dir: Path, home: Path, tracking_uri: str, seed: int = 0, step: Step | None = None
) -> dict[str, TrainedModel]:
    """Train the affinity model (one ALS and one BPR configuration) and the uplift model (few
    trees) on ``data_dir``, register both, run their gates and make each new version champion
    (forced when the gate kept it as challenger: the demo serves what it just trained).

    Returns ``{"affinity": ..., "uplift": ...}``.
    """
    from training.affinity.evaluate import EvalSettings
    from training.affinity.search import SearchSettings
    from training.affinity.train import DEFAULT_GATE as AFFINITY_GATE
    from training.affinity.train import train_affinity
    from training.registry import ModelRegistry
    from training.uplift.train import DEFAULT_GATE as UPLIFT_GATE
    from training.uplift.train import UpliftTrainSettings, train_uplift

    say = step or (lambda _msg: None)
    registry = ModelRegistry(tracking_uri=tracking_uri, home=home)
    say("training affinity (ALS + BPR blend, one configuration each)")
    aff = train_affinity(
        data_dir,
        EvalSettings(),
        SearchSettings(als_trials=1, bpr_trials=1, seed=seed, num_threads=1, min_als_weight=0.25),
        registry,
        dataset="demo",
    )
    say("training uplift (S-learner, LightGBM, few trees)")
    upl = train_uplift(
        data_dir, UpliftTrainSettings(base_params=DEMO_UPLIFT_PARAMS, seed=seed), registry
    )
    out = {}
    for key, name, result, gate in (
        ("affinity", "offers-affinity", aff, AFFINITY_GATE),
        ("uplift", "offers-uplift", upl, UPLIFT_GATE),
    ):
        decision = result.decision
        if not decision.promoted:
            registry.promote(name, result.version, reason=DEMO_REASON)
        out[key] = TrainedModel(
            name=name,
            version=str(result.version),
            gate_promoted=decision.promoted,
            gate_reason=decision.reason,
            metric=gate.metric,
            value=decision.challenger_value,
        )
    return out
