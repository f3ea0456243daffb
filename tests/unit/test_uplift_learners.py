"""Uplift learners: planted effects, multi-treatment shapes, propensity weights, input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.uplift import (
    LEARNERS,
    ClassTransformationLearner,
    NotFittedError,
    SLearner,
    TLearner,
    UpliftInputError,
    XLearner,
    make_base_estimator,
)

FAST = {"n_estimators": 40, "learning_rate": 0.1, "min_child_samples": 50}
FAST_HGB = {"max_iter": 40, "learning_rate": 0.1, "min_samples_leaf": 50}


def planted(n: int = 4_000, seed: int = 0, arms: int = 1):
    """Effect of arm k only where x0 > 0: +0.25 * k on a 0.2 base rate; spend +3 * k there."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    t = rng.integers(0, arms + 1, n)
    tau = 0.25 * t * (X[:, 0] > 0)
    y = (rng.random(n) < 0.2 + 0.1 * (X[:, 1] > 0) + tau).astype(int)
    spend = 5 + X[:, 1] + 12 * tau + rng.normal(scale=1.0, size=n)
    return X, y, spend, t


@pytest.mark.parametrize("name", ["S", "T", "X", "CT"])
@pytest.mark.parametrize("base", ["lightgbm", "hgb"])
def test_binary_planted_effect_is_found(name: str, base: str) -> None:
    X, y, _, t = planted()
    params = FAST if base == "lightgbm" else FAST_HGB
    model = LEARNERS[name](base_learner=base, base_params=params, random_state=1)
    assert model.fit(X, y, t) is model
    effect = model.predict(X)
    assert effect.shape == (X.shape[0], 1)
    assert model.treatments_ == [1]
    assert model.outcome_ == "binary"
    where = X[:, 0] > 0
    assert effect[where, 0].mean() > effect[~where, 0].mean() + 0.12
    true_ate = 0.25 * where.mean()
    assert abs(effect[:, 0].mean() - true_ate) < 0.04


@pytest.mark.parametrize("cls", [SLearner, TLearner, XLearner])
def test_continuous_planted_effect_is_found(cls) -> None:
    X, _, spend, t = planted(seed=2)
    model = cls(base_params=FAST, random_state=0).fit(X, spend, t)
    assert model.outcome_ == "continuous"
    effect = model.predict(X)[:, 0]
    where = X[:, 0] > 0
    assert effect[where].mean() == pytest.approx(3.0, abs=0.5)
    assert effect[~where].mean() == pytest.approx(0.0, abs=0.5)


@pytest.mark.parametrize("name", ["S", "T", "X", "CT"])
def test_multi_treatment_string_labels(name: str) -> None:
    X, y, _, t = planted(n=6_000, seed=3, arms=2)
    labels = np.array(["none", "email", "sms"], dtype=object)[t]  # email = arm 1, sms = arm 2
    model = LEARNERS[name](base_params=FAST, control="none", random_state=0)
    effect = model.fit(pd.DataFrame(X, columns=list("abcd")), y, labels).predict(X[:500])
    assert effect.shape == (500, 2)
    assert model.treatments_ == ["email", "sms"]
    assert model.feature_names_in_ == list("abcd")
    where = X[:500, 0] > 0
    # sms (+0.5 where x0 > 0) beats email (+0.25) where the effect is planted
    assert effect[where, 1].mean() > effect[where, 0].mean() + 0.1


def test_predictions_are_deterministic_given_random_state() -> None:
    X, y, _, t = planted(n=2_000, seed=4)
    params = {**FAST, "subsample": 0.7, "subsample_freq": 1, "colsample_bytree": 0.7}
    first = XLearner(base_params=params, random_state=7).fit(X, y, t).predict(X)
    second = XLearner(base_params=params, random_state=7).fit(X, y, t).predict(X)
    other = XLearner(base_params=params, random_state=8).fit(X, y, t).predict(X)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_class_transformation_uses_propensity_weights() -> None:
    """Assignment depends on x1, which also drives y: only the weighted fit is unbiased."""
    rng = np.random.default_rng(5)
    n = 20_000
    X = rng.normal(size=(n, 2))
    p_treat = np.where(X[:, 1] > 0, 0.8, 0.2)
    t = (rng.random(n) < p_treat).astype(int)
    y = (rng.random(n) < 0.1 + 0.4 * (X[:, 1] > 0) + 0.2 * t).astype(int)
    propensity = np.where(t == 1, p_treat, 1 - p_treat)
    params = {**FAST, "min_child_samples": 500}
    weighted = ClassTransformationLearner(base_params=params).fit(X, y, t, propensity=propensity)
    plain = ClassTransformationLearner(base_params=params).fit(X, y, t)
    assert abs(weighted.predict(X).mean() - 0.2) < 0.03
    assert abs(plain.predict(X).mean() - 0.2) > 0.08


def test_x_learner_combines_with_arm_shares() -> None:
    X, y, _, t = planted(n=3_000, seed=6)
    t = np.where(np.arange(t.size) % 4 == 0, 0, 1)  # control share 1/4
    model = XLearner(base_params=FAST).fit(X, y, t)
    np.testing.assert_allclose(model.control_share_, [0.75])


def test_make_base_estimator_merges_params() -> None:
    est = make_base_estimator("lightgbm", "classifier", {"num_leaves": 7}, random_state=3)
    assert est.get_params()["num_leaves"] == 7
    assert est.get_params()["random_state"] == 3
    assert est.get_params()["min_child_samples"] == 50  # from the defaults
    hgb = make_base_estimator("hgb", "regressor", {"max_iter": 5})
    assert type(hgb).__name__ == "HistGradientBoostingRegressor"
    with pytest.raises(UpliftInputError, match=r"base_learner must be one of .* got 'xgb'"):
        make_base_estimator("xgb", "classifier")


def test_get_and_set_params() -> None:
    model = TLearner(control="none")
    assert model.get_params()["control"] == "none"
    assert model.set_params(base_learner="hgb") is model
    assert model.base_learner == "hgb"
    with pytest.raises(UpliftInputError, match=r"unknown parameter 'depth'"):
        model.set_params(depth=3)


X0, Y0, _, T0 = planted(n=400, seed=9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"X": X0[:, :, None]}, r"X must be 2-D \(rows x features\); got shape \(400, 4, 1\)"),
        (
            {"X": np.where(np.eye(400, 4) == 1, np.inf, X0)},
            r"X has infinite values; first at row 0",
        ),
        ({"X": np.full((400, 4), "a")}, r"X must be numeric \(encode categoricals first\)"),
        ({"y": Y0[:10]}, r"y has 10 rows but X has 400"),
        ({"y": np.where(np.arange(400) == 3, np.nan, Y0)}, r"y has 1 NaN .* first at index 3"),
        (
            {"treatment": T0 + 1},
            r"control label 0 not found in treatment; labels seen: \['1', '2'\]",
        ),
        ({"treatment": np.zeros(400, int)}, r"holds only the control label 0"),
        (
            {"treatment": np.where(T0 == 1, "a", None)},
            r"treatment has missing labels; first at index",
        ),
        ({"treatment": np.array([0, "a"] * 200, dtype=object)}, r"all ints or all strings"),
        ({"propensity": np.full(400, 1.5)}, r"propensity must be in \(0, 1\]; got 1.5 at index 0"),
        ({"propensity": np.ones(3)}, r"propensity has 3 rows but X has 400"),
        (
            {"y": np.where(T0 == 1, 1, Y0)},
            r"treatment group 1 has only y=1 .* needs both 0 and 1 in every group",
        ),
        ({"treatment": np.where(np.arange(400) == 0, 1, 0)}, r"treatment group 1 has 1 row"),
    ],
)
def test_fit_input_errors(kwargs: dict, message: str) -> None:
    args = {"X": X0, "y": Y0, "treatment": T0} | kwargs
    with pytest.raises(UpliftInputError, match=message):
        TLearner(base_params=FAST).fit(**args)


def test_learner_specific_errors() -> None:
    with pytest.raises(UpliftInputError, match=r"supports binary outcomes only"):
        ClassTransformationLearner().fit(X0, Y0 * 2.5, T0)
    with pytest.raises(UpliftInputError, match=r"outcome='binary' needs y in \{0, 1\}; got"):
        TLearner(outcome="binary").fit(X0, Y0 * 2.5, T0)
    with pytest.raises(UpliftInputError, match=r"base_learner must be one of"):
        TLearner(base_learner="forest").fit(X0, Y0, T0)
    with pytest.raises(NotFittedError, match=r"SLearner is not fitted"):
        SLearner().predict(X0)
    model = SLearner(base_params=FAST).fit(X0, Y0, T0)
    with pytest.raises(UpliftInputError, match=r"X has 3 features but SLearner was fitted with 4"):
        model.predict(X0[:, :3])


@pytest.mark.parametrize(
    ("labels", "control", "kind"),
    [
        (np.array(["c", "a", "b"] * 4, dtype=object), "c", str),
        (np.array(["c", "a", "b"] * 4), "c", str),  # numpy strings
        (np.array([np.str_("c"), "a", "b"] * 4, dtype=object), "c", str),
        (np.array([0, 1, 2] * 4), 0, int),  # numpy ints
    ],
)
def test_treatment_labels_become_python_scalars(labels, control, kind) -> None:
    out = SLearner(control=control)._check_treatment(labels)
    assert out.dtype == object and {type(v) for v in out} == {kind}
    assert out.tolist() == [v.item() if hasattr(v, "item") else v for v in labels]
    assert out is not labels
