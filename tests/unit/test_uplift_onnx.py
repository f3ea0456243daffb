"""ONNX export of the uplift learners: parity with the native model on 10,000 rows."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

from models.uplift import LEARNERS, NotFittedError, TLearner, UpliftInputError
from models.uplift.onnx_export import OnnxUpliftPredictor, export_onnx

# LightGBM models export through onnxmltools (pinned in the train extra); HGB needs only skl2onnx.
needs_onnxmltools = pytest.mark.skipif(
    importlib.util.find_spec("onnxmltools") is None,
    reason="onnxmltools==1.16.0 (train extra) is needed to export LightGBM models",
)

FAST = {"n_estimators": 50, "learning_rate": 0.1, "min_child_samples": 50}
FAST_HGB = {"max_iter": 50, "learning_rate": 0.1, "min_samples_leaf": 50}


def _data(n: int = 10_000, arms: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[:, 4] = rng.integers(0, 4, n)  # a discrete column, like one-hot / counts
    t = rng.integers(0, arms + 1, n)
    y = (rng.random(n) < 0.2 + 0.1 * t * (X[:, 0] > 0)).astype(int)
    spend = 3 * X[:, 1] + t * (X[:, 0] > 0) + rng.normal(size=n)
    return X, y, spend, t


@needs_onnxmltools
@pytest.mark.parametrize("name", ["S", "T", "X", "CT"])
def test_parity_binary_multi_treatment_lightgbm(name: str) -> None:
    X, y, _, t = _data()
    model = LEARNERS[name](base_params=FAST).fit(X, y, t)
    predictor = OnnxUpliftPredictor(export_onnx(model))
    native = model.predict(X)
    served = predictor.predict(X)
    assert served.shape == native.shape == (10_000, 2)
    assert np.abs(served - native).max() <= 1e-4
    assert predictor.treatments == ["1", "2"]
    assert predictor.learner == type(model).__name__


@needs_onnxmltools
@pytest.mark.parametrize(
    ("name", "base", "params"),
    [("S", "lightgbm", FAST), ("X", "lightgbm", FAST), ("T", "lightgbm", FAST)],
)
def test_parity_continuous_outcome(name: str, base: str, params: dict) -> None:
    X, _, spend, t = _data(arms=1, seed=1)
    model = LEARNERS[name](base_learner=base, base_params=params).fit(X, spend, t)
    served = OnnxUpliftPredictor(export_onnx(model)).predict(X)
    assert served.shape == (10_000, 1)
    assert np.abs(served - model.predict(X)).max() <= 1e-4


def test_parity_binary_hgb() -> None:
    X, y, _, t = _data(arms=1, seed=2)
    model = LEARNERS["CT"](base_learner="hgb", base_params=FAST_HGB).fit(X, y, t)
    served = OnnxUpliftPredictor(export_onnx(model)).predict(X)
    assert np.abs(served - model.predict(X)).max() <= 1e-4


@needs_onnxmltools
def test_model_is_one_valid_graph_with_metadata() -> None:
    X, y, _, t = _data(n=2_000)
    labels = np.array(["none", "a", "b"], dtype=object)[t]
    model = TLearner(base_params=FAST, control="none").fit(X, y, labels)
    proto = onnx.load_from_string(export_onnx(model))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["X"]
    assert [o.name for o in proto.graph.output] == ["uplift"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["treatments"] == "a|b"
    assert meta["outcome"] == "binary"
    single_row = OnnxUpliftPredictor(proto.SerializeToString()).predict(X[0])
    np.testing.assert_allclose(single_row, model.predict(X[:1]), atol=1e-5)


@needs_onnxmltools
def test_errors() -> None:
    with pytest.raises(NotFittedError, match=r"TLearner is not fitted; nothing to export"):
        export_onnx(TLearner())
    X, y, _, t = _data(n=2_000, arms=1)
    predictor = OnnxUpliftPredictor(export_onnx(TLearner(base_params=FAST).fit(X, y, t)))
    with pytest.raises(UpliftInputError, match=r"X must have shape \(n, 5\); got \(3, 4\)"):
        predictor.predict(X[:3, :4])
