"""The memory-saving shapes of uplift training give the same numbers (issue 18).

* the encoder's float32 matrix holds exactly the float64 matrix's values (16-bit values are
  float32 numbers), and encoding in chunks changes nothing;
* every learner fitted on that float32 matrix predicts exactly what it predicts when fitted on
  the float64 one (LightGBM and scikit-learn's HGB see the same values);
* predicting in chunks (native readout, onnxruntime) gives the same effects as one call.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from models.uplift import LEARNERS, UpliftInputError
from models.uplift.encoding import FeatureEncoder
from models.uplift.onnx_export import OnnxUpliftPredictor, export_onnx

FAST = {"n_estimators": 30, "learning_rate": 0.1, "min_child_samples": 20}
FAST_HGB = {"max_iter": 30, "learning_rate": 0.1, "min_samples_leaf": 20}


def _frame(n: int = 3_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spend = rng.lognormal(3.0, 1.2, n)  # many significant digits: rounding matters
    spend[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "spend_90d": spend,
            "visits": rng.integers(0, 40, n),
            "tenure_days": rng.uniform(0, 3_000, n),
            "email_ok": rng.random(n) < 0.5,
            "region": rng.choice(["north", "south", "east", None], n),
        }
    )


def _outcomes(frame: pd.DataFrame, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = len(frame)
    t = rng.choice(["control", "a", "b"], n)
    lift = np.where(t != "control", 0.15 * (frame["visits"].to_numpy() > 20), 0.0)
    y = (rng.random(n) < 0.2 + lift).astype(int)
    spend = 0.01 * np.nan_to_num(frame["spend_90d"].to_numpy()) + 2 * lift + rng.normal(size=n)
    return t, y, spend


def test_float32_matrix_has_the_float64_values_and_chunks_change_nothing() -> None:
    frame = _frame()
    enc = FeatureEncoder().fit(frame.iloc[:2_000])
    full = enc.transform(frame)
    f32 = enc.transform(frame, dtype=np.float32, chunk_rows=701)
    assert f32.dtype == np.float32 and full.dtype == np.float64
    assert f32.shape == full.shape == (3_000, len(enc.feature_names_out_))
    # exact: NaN where NaN, and every other value equal once widened back to float64
    np.testing.assert_array_equal(f32.astype(np.float64), full)
    assert np.isnan(full[:, enc.feature_names_out_.index("spend_90d")]).sum() > 0
    np.testing.assert_array_equal(enc.transform(frame, chunk_rows=1_000), full)
    assert enc.transform(frame.iloc[:0]).shape == (0, len(enc.feature_names_out_))


def test_transform_rejects_other_dtypes_and_chunk_sizes() -> None:
    enc = FeatureEncoder().fit(_frame(50))
    with pytest.raises(UpliftInputError, match="dtype must be float64 or float32; got int64"):
        enc.transform(_frame(50), dtype=np.int64)
    with pytest.raises(UpliftInputError, match="chunk_rows must be an int >= 1; got 0"):
        enc.transform(_frame(50), chunk_rows=0)


@pytest.mark.parametrize("name", ["S", "T", "X", "CT"])
@pytest.mark.parametrize(("base", "params"), [("lightgbm", FAST), ("hgb", FAST_HGB)])
def test_learners_fitted_on_float32_predict_the_same(name: str, base: str, params: dict) -> None:
    frame = _frame()
    t, y, spend = _outcomes(frame)
    enc = FeatureEncoder().fit(frame)
    X64, X32 = enc.transform(frame), enc.transform(frame, dtype=np.float32)
    outcomes = [y] if name == "CT" else [y, spend]
    for target in outcomes:
        a = LEARNERS[name](base_learner=base, base_params=params, control="control")
        b = LEARNERS[name](base_learner=base, base_params=params, control="control")
        a.fit(X64, target, t)
        b.fit(X32, target, t)
        np.testing.assert_array_equal(b.predict(X32), a.predict(X64))
        np.testing.assert_array_equal(b.predict(X64), a.predict(X64))


@pytest.mark.parametrize("name", ["S", "T", "X"])
def test_chunked_readout_equals_one_call(name: str) -> None:
    frame = _frame()
    t, y, _ = _outcomes(frame)
    X = FeatureEncoder().fit(frame).transform(frame, dtype=np.float32)
    model = LEARNERS[name](base_params=FAST, control="control").fit(X, y, t)
    whole = model.readout_.evaluate(X, chunk_rows=len(X))
    np.testing.assert_array_equal(model.readout_.evaluate(X, chunk_rows=333), whole)
    assert whole.shape == (len(X), 2)


@pytest.mark.skipif(
    importlib.util.find_spec("onnxmltools") is None,
    reason="onnxmltools==1.16.0 (train extra) is needed to export LightGBM models",
)
def test_chunked_onnx_prediction_equals_one_call() -> None:
    frame = _frame()
    t, y, _ = _outcomes(frame)
    X = FeatureEncoder().fit(frame).transform(frame, dtype=np.float32)
    model = LEARNERS["S"](base_params=FAST, control="control").fit(X, y, t)
    one = OnnxUpliftPredictor(export_onnx(model))
    whole = one.predict(X)
    chunked = OnnxUpliftPredictor(export_onnx(model))
    chunked.chunk_rows = 400
    np.testing.assert_array_equal(chunked.predict(X), whole)
    assert np.abs(whole - model.predict(X)).max() <= 1e-4
