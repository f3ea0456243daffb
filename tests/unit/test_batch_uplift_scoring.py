"""Scoring a chunk with a real (tiny) ONNX uplift pyfunc: only the needed outcome, in blocks,
equal to the pyfunc's own ``predict``; local artifact directories; the benchmark's scorer."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from models.uplift import SLearner
from models.uplift.encoding import FeatureEncoder
from models.uplift.onnx_export import export_onnx
from models.uplift.pyfunc import UpliftPyfunc, save_artifacts
from serving.batch.scorers import UpliftHeadScorer, load_model_dir
from serving.batch.synthetic import synthetic_catalog, synthetic_members
from serving.engine import OfferTable
from serving.engine.adapters import predict_frame, uplift_matrix

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxmltools") is None,
    reason="onnxmltools (train extra) is needed to export LightGBM models",
)

FAST = {"n_estimators": 20, "learning_rate": 0.1, "min_child_samples": 20}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    frame = synthetic_members(1500, seed=2).drop(columns=["member_id"])
    frame["points_balance"] = frame["points_balance"].where(rng.random(1500) > 0.1)
    enc = FeatureEncoder().fit(frame)
    X = enc.transform(frame)
    arm = rng.choice(np.array(["control", "bogo", "credit"], dtype=object), 1500)
    y = (rng.random(1500) < 0.2 + 0.2 * (arm == "bogo")).astype(np.int64)
    spend = y * 25.0 + rng.gamma(2.0, 5.0, 1500)
    learners = {
        "conversion": SLearner(base_params=FAST, control="control").fit(X, y, arm),
        "spend": SLearner(base_params=FAST, control="control", outcome="continuous").fit(
            X, spend, arm
        ),
    }
    meta = {"outcomes": list(learners), "treatments": ["bogo", "credit"], "control": "control"}
    out = tmp_path_factory.mktemp("uplift-model")
    save_artifacts({o: export_onnx(m) for o, m in learners.items()}, enc, meta, out)
    return out


def test_effects_of_one_outcome_in_blocks_equal_the_pyfunc(model_dir):
    loaded = load_model_dir("uplift", model_dir)
    assert isinstance(loaded.model, UpliftPyfunc)
    members = synthetic_members(203, seed=9)
    full = loaded.predict(members)
    only = predict_frame(loaded, members, {"outcomes": ["spend"]})
    assert list(only.columns) == ["spend:bogo", "spend:credit"]
    np.testing.assert_array_equal(only.to_numpy(), full[list(only.columns)].to_numpy())
    offers = OfferTable.from_catalog(synthetic_catalog(12, 1000, seed=1))
    got = uplift_matrix(loaded, members, offers, "spend", block_rows=50)
    kinds = offers.kind_names()
    for j in range(offers.n):
        col = f"spend:{kinds[j]}"
        want = full[col].to_numpy() if col in full else np.zeros(len(members))
        np.testing.assert_array_equal(got[:, j], want)
    assert np.abs(got).max() > 0
    with pytest.raises(Exception, match="visits"):
        predict_frame(loaded, members, {"outcomes": ["visits"]})


def test_head_scorer_maps_effects_by_kind(model_dir):
    loaded = load_model_dir("uplift", model_dir)
    cat = synthetic_catalog(12, 1000, seed=1)
    offers = OfferTable.from_catalog(cat)
    members = synthetic_members(40, seed=3)
    inputs = UpliftHeadScorer(loaded).score(members, offers)
    assert inputs.p_redeem.shape == inputs.incremental_spend.shape == (40, offers.n)
    effects = loaded.predict(members)
    kinds = offers.kind_names()
    for j in range(offers.n):
        col = f"spend:{kinds[j]}"
        want = effects[col].to_numpy() if col in effects else np.zeros(40)
        np.testing.assert_array_equal(inputs.incremental_spend[:, j], want)
    assert "bogo" in set(kinds) and "credit" in set(kinds)
