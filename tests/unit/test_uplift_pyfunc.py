"""The uplift pyfunc on tiny data: artifacts in, per-treatment effects out, same as native.

No MLflow server or run: ``UpliftPyfunc().load(artifacts)`` is what ``load_context`` does.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.uplift import SLearner, TLearner, UpliftInputError
from models.uplift.encoding import FeatureEncoder
from models.uplift.onnx_export import export_onnx
from models.uplift.pyfunc import UpliftPyfunc, effect_column, save_artifacts, signature
from training.uplift.calibration import apply_shifts, level_shifts

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxmltools") is None,
    reason="onnxmltools==1.16.0 (train extra) is needed to export LightGBM models",
)

FAST = {"n_estimators": 20, "learning_rate": 0.1, "min_child_samples": 30}


def _frame(n: int = 3_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "spend_30d": rng.gamma(2.0, 20.0, n),
            "n_purchases_total": rng.integers(0, 40, n),
            "segment": rng.choice(["commuter", "family", "premium"], n),
            "gender": pd.Series(rng.choice(["F", "M", None], n), dtype="str"),
        }
    )
    arm = rng.choice(np.array(["control", "bogo", "credit"], dtype=object), n)
    lift = 0.25 * (arm == "bogo") * (frame["segment"] == "family") + 0.1 * (arm == "credit")
    y = (rng.random(n) < 0.2 + lift).astype(np.int64)
    return frame, arm, y


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    frame, arm, y = _frame()
    enc = FeatureEncoder().fit(frame)
    X = enc.transform(frame)
    spend = y * 30.0 + np.random.default_rng(1).gamma(2.0, 10.0, len(y))
    learners = {
        "conversion": SLearner(base_params=FAST, control="control").fit(X, y, arm),
        "spend": TLearner(base_params=FAST, control="control").fit(X, spend, arm),
    }
    meta = {"outcomes": list(learners), "treatments": ["bogo", "credit"], "control": "control"}
    arts = save_artifacts(
        {o: export_onnx(m) for o, m in learners.items()}, enc, meta, tmp_path_factory.mktemp("u")
    )
    return frame, X, learners, arts


def test_predicts_every_outcome_and_treatment_like_the_native_models(packaged) -> None:
    frame, X, learners, arts = packaged
    model = UpliftPyfunc().load(arts)
    out = model.predict(None, frame)
    assert list(out.columns) == [
        "conversion:bogo",
        "conversion:credit",
        "spend:bogo",
        "spend:credit",
    ]
    for outcome, learner in learners.items():
        cols = [effect_column(outcome, t) for t in ("bogo", "credit")]
        assert np.abs(out[cols].to_numpy() - learner.predict(X)).max() <= 1e-4
    # the planted effect: bogo works for families
    family = frame["segment"] == "family"
    assert out.loc[family, "conversion:bogo"].mean() > out.loc[~family, "conversion:bogo"].mean()


def test_input_columns_in_any_order_extra_columns_ignored(packaged) -> None:
    frame, _, _, arts = packaged
    model = UpliftPyfunc().load(arts)
    shuffled = frame.iloc[:50][frame.columns[::-1]].assign(member_id="m1")
    pd.testing.assert_frame_equal(model.predict(None, shuffled), model.predict(None, frame[:50]))
    assert model.predict(None, frame.iloc[:0]).shape == (0, 4)


def test_errors_name_the_problem(packaged) -> None:
    frame, _, _, arts = packaged
    model = UpliftPyfunc().load(arts)
    with pytest.raises(UpliftInputError, match=r"missing feature column\(s\) \['segment'\]"):
        model.predict(None, frame.drop(columns=["segment"]))
    with pytest.raises(UpliftInputError, match="must be a DataFrame"):
        model.predict(None, frame.to_numpy())
    bad = dict(arts)
    meta = json.loads(Path(arts["meta"]).read_text())
    meta["treatments"] = ["credit", "bogo"]
    path = arts["meta"].replace("uplift_meta.json", "other_meta.json")
    Path(path).write_text(json.dumps(meta))
    bad["meta"] = path
    with pytest.raises(UpliftInputError, match="predicts"):
        UpliftPyfunc().load(bad)


def test_signature_lists_feature_types_and_effect_columns(packaged) -> None:
    frame, _, _, _ = packaged
    sig = signature(frame.head(5), ["conversion"], ["bogo", "credit"])
    types = {c["name"]: c["type"] for c in sig.inputs.to_dict()}
    assert types == {
        "spend_30d": "double",
        "n_purchases_total": "long",
        "segment": "string",
        "gender": "string",
    }
    assert sig.outputs.input_names() == ["conversion:bogo", "conversion:credit"]


def test_level_calibration_shifts_the_mean_effect_not_the_ranking() -> None:
    frame, arm, y = _frame(seed=3)
    X = FeatureEncoder().fit_transform(frame)
    model = SLearner(base_params=FAST, control="control").fit(X, y, arm)
    before = model.predict(X)
    shifts = level_shifts(model, X, y.astype(float), arm)
    apply_shifts(model, shifts)
    after = model.predict(X)
    np.testing.assert_allclose(after - before, np.broadcast_to(shifts, before.shape))
    # the randomised arms: the calibrated mean effect is close to the difference in means
    for j, t in enumerate(model.treatments_):
        dim = y[arm == t].mean() - y[arm == "control"].mean()
        assert after[arm == t, j].mean() == pytest.approx(dim, abs=0.03)
    # and the ONNX export carries the shift
    from models.uplift.onnx_export import OnnxUpliftPredictor

    served = OnnxUpliftPredictor(export_onnx(model)).predict(X)
    assert np.abs(served - after).max() <= 1e-4
    with pytest.raises(ValueError, match="shifts must have shape"):
        apply_shifts(model, np.zeros(5))
