"""Predicting only the effects a metric reads, and the sampled ONNX parity check (issue 18).

* ``Readout.evaluate_selected`` / ``predict_selected`` give exactly ``predict``'s values where
  selected (a treated row's own treatment, every treatment on a control row), NaN elsewhere,
  and evaluate a term only on the rows that need it (an S-learner row of one treatment: 2 of
  its k + 1 terms);
* ``level_fit`` and ``heterogeneity_slope`` give the numbers of a full ``predict``;
* ``fit_uplift``: the test metrics equal those of the full predictions; the parity check uses
  a seeded sample of ``parity_rows`` test rows, recorded as ``rows.parity``, and
  ``parity_rows=None`` checks every test row.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.uplift import LEARNERS, UpliftInputError
from models.uplift.base import ALL_COLUMNS, NO_COLUMN, Readout
from training.uplift.calibration import heterogeneity_slope, level_fit
from training.uplift.data import TREATMENT
from training.uplift.evaluate import score_effects
from training.uplift.fit import UpliftTrainSettings, fit_uplift

FAST = {"n_estimators": 20, "learning_rate": 0.1, "min_child_samples": 20}
ARMS = ["control", "a", "b", "c"]


def _data(n: int = 2_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    t = rng.choice(ARMS, n)
    lift = np.select([t == "a", t == "b", t == "c"], [0.2 * (X[:, 0] > 0), 0.1, -0.05], 0.0)
    y = (rng.random(n) < 0.3 + lift).astype(np.float64)
    return X, y, t


def _fitted(name: str):
    X, y, t = _data()
    return LEARNERS[name](base_params=FAST, control="control").fit(X, y, t), X, y, t


@pytest.mark.parametrize("name", ["S", "T", "X", "CT"])
def test_selected_effects_equal_predict_where_selected(name: str) -> None:
    learner, X, _, t = _fitted(name)
    own = learner.columns_of(t)
    assert set(own[t == "control"]) == {ALL_COLUMNS}
    assert [own[t == a][0] for a in learner.treatments_] == [0, 1, 2]
    own[:10] = NO_COLUMN
    full = learner.predict(X)
    got = learner.predict_selected(X, own)
    every = own == ALL_COLUMNS
    np.testing.assert_allclose(got[every], full[every], rtol=0, atol=1e-12)
    for j in range(3):
        rows = own == j
        np.testing.assert_allclose(got[rows, j], full[rows, j], rtol=0, atol=1e-12)
        assert np.isnan(np.delete(got[rows], j, axis=1)).all()
    assert np.isnan(got[:10]).all()


def test_an_s_learner_row_of_one_treatment_evaluates_two_terms() -> None:
    learner, X, _, t = _fitted("S")
    own = learner.columns_of(t)
    outputs = learner.readout_.term_outputs(X, own)
    evaluated = (outputs != 0).sum(axis=1)  # probabilities of a classifier are never 0
    assert set(evaluated[own >= 0]) == {2}
    assert set(evaluated[own == ALL_COLUMNS]) == {len(learner.treatments_) + 1}


def test_selection_errors_name_the_row_and_value() -> None:
    learner, X, _, _ = _fitted("T")
    with pytest.raises(UpliftInputError, match=r"own\[3\] = 7: must be a column 0..2"):
        learner.predict_selected(X[:5], np.array([0, 1, 2, 7, -1]))
    with pytest.raises(UpliftInputError, match="one per row of X"):
        learner.predict_selected(X[:5], np.array([0, 1]))
    with pytest.raises(ValueError, match="outputs must have shape"):
        learner.readout_.combine(np.zeros((5, 2)), np.zeros(5, dtype=np.int64))


class _FullPredict:
    """The learner, with ``predict_selected`` as the full ``predict`` (the old path)."""

    def __init__(self, learner) -> None:
        self._learner = learner

    def __getattr__(self, name):
        return getattr(self._learner, name)

    def predict_selected(self, X, own):
        return self._learner.predict(X)


@pytest.mark.parametrize("name", ["S", "X"])
def test_level_fit_and_slope_equal_those_of_full_predictions(name: str) -> None:
    learner, X, y, t = _fitted(name)
    new = level_fit(learner, X, y, t)
    old = level_fit(_FullPredict(learner), X, y, t)
    np.testing.assert_allclose(new.shifts, old.shifts, rtol=0, atol=1e-12)
    np.testing.assert_allclose(new.shrunk, old.shrunk, rtol=0, atol=1e-12)
    X2, y2, t2 = _data(seed=5)
    slope = heterogeneity_slope(learner, new.baseline, X2, y2, t2)
    full = heterogeneity_slope(learner, new.baseline, X2, y2, t2, effects=learner.predict(X2))
    np.testing.assert_allclose(slope, full, rtol=1e-10, atol=1e-12)


def test_combine_with_another_readout_of_the_same_terms() -> None:
    learner, X, _, t = _fitted("S")
    own = learner.columns_of(t)
    outputs = learner.readout_.term_outputs(X, own)
    r = learner.readout_
    scaled = Readout(r.terms, r.weights * 0.5, r.intercept + 1.0)
    expected = scaled.evaluate(X)
    got = scaled.combine(outputs, own)
    sel = ~np.isnan(got)
    np.testing.assert_allclose(got[sel], expected[sel], rtol=0, atol=1e-12)


# ---- fit_uplift: the metrics of the full predictions, the parity sample --------------------
def _training_set():
    from tests.unit.test_uplift_level_window import _training_set as level_set

    return level_set()


def _settings(**kw) -> UpliftTrainSettings:
    return UpliftTrainSettings(treatment="kind", base_params=FAST, test_share=0.15, **kw)


def test_fit_metrics_equal_those_of_full_test_predictions() -> None:
    data = _training_set()
    fitted = fit_uplift(data, _settings())
    te = data.frame[fitted.test].reset_index(drop=True)
    X_te = fitted.encoder.transform(te[list(data.feature_columns)], dtype=np.float32)
    full = {o: fitted.learners[o].predict(X_te) for o in fitted.learners}
    for o, pred in fitted.effects.items():
        sel = ~np.isnan(pred)
        np.testing.assert_allclose(pred[sel], full[o][sel], rtol=0, atol=1e-9)
        control = (te[TREATMENT] == data.control).to_numpy()
        assert sel[control].all() and sel.sum() == control.sum() * 2 + (~control).sum()
    old = score_effects(te, full, fitted.treatments, data.control, "conversion")
    new = {k: v for k, v in fitted.metrics.items() if k in old}
    assert new.keys() == old.keys()
    for k in old:
        assert new[k] == pytest.approx(old[k], rel=1e-9, abs=1e-12), k


def test_parity_is_checked_on_a_seeded_sample_and_none_checks_every_row() -> None:
    data = _training_set()
    every = fit_uplift(data, _settings(parity_rows=None, outcomes=("conversion",)))
    n_test = every.metrics["rows.test"]
    assert n_test > 500
    sampled = fit_uplift(data, _settings(parity_rows=500, outcomes=("conversion",)))
    again = fit_uplift(data, _settings(parity_rows=500, outcomes=("conversion",)))
    assert every.metrics["rows.parity"] == n_test
    assert sampled.metrics["rows.parity"] == 500
    assert sampled.parity == again.parity  # seeded
    assert 0 <= sampled.parity["conversion"] <= every.parity["conversion"]
    # everything but the parity figures is the same
    skip = {"rows.parity", "onnx_max_abs_diff.conversion"}
    assert {k: v for k, v in every.metrics.items() if k not in skip} == {
        k: v for k, v in sampled.metrics.items() if k not in skip
    }


def test_parity_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="parity_rows must be >= 1 or None; got 0"):
        replace(_settings(), parity_rows=0)
