"""The randomised-data engine policy is built by the shipped pieces (tiny data, known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.engine.settings import ScoringSettings
from training.policy import engine_effects as E
from training.policy.arms import ArmData, ArmsConfig, evaluate_arms
from training.policy.policies import send_policy
from training.policy.randomized import PolicyInputError
from training.policy.run import parse_settings

FEW_TREES = {"n_estimators": 30}


def _randomised(n: int, seed: int, effect, noise: float = 1.0):
    """Three arms at 1/3; continuous outcome = x0 + effect(arm, X) + noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    arm = rng.integers(0, 3, n)
    y = X[:, 0] + effect(arm, X) + noise * rng.normal(size=n)
    return X, y, arm


def test_lower_bound_subtracts_z_standard_errors_per_arm() -> None:
    eff = np.array([[1.0, 2.0], [0.5, -1.0]])
    got = E.lower_bound(eff, np.array([0.1, 0.4]), 2.0)
    assert got == pytest.approx(np.array([[0.8, 1.2], [0.3, -1.8]]))
    assert E.lower_bound(eff, np.array([0.1, 0.4]), 0.0).tolist() == eff.tolist()
    with pytest.raises(PolicyInputError, match=r"se must have one entry per arm \(2\)"):
        E.lower_bound(eff, np.array([0.1]), 1.0)
    with pytest.raises(PolicyInputError, match="uncertainty_z must be a finite number >= 0"):
        E.lower_bound(eff, np.array([0.1, 0.4]), -1.0)


def test_default_z_is_read_from_the_engine_settings(monkeypatch) -> None:
    assert E.default_uncertainty_z() == ScoringSettings().uncertainty_z

    class Wider(ScoringSettings):
        uncertainty_z: float = 2.5

    monkeypatch.setattr(E, "ScoringSettings", Wider)
    assert E.default_uncertainty_z() == 2.5


def test_variants_differ_by_exactly_one_piece() -> None:
    # arm 1: +0.5 for everyone, arm 2: 0; no heterogeneity at all
    X, y, arm = _randomised(3_000, 1, lambda a, X: 0.5 * (a == 1))
    fit = E.engine_fit(0, base_params=FEW_TREES, uncertainty_z=1.5)
    effects, info = fit(X[:2_400], y[:2_400], arm[:2_400], X[2_400:], 3)
    assert set(effects) == {E.ENGINE, E.NO_LCB, E.NO_DAMPING, E.NO_SHRINKAGE, E.REFIT}
    assert info["rows_fit"] == 1_920 and info["rows_slope"] == 480  # 20% held out
    se, shrunk = np.array(info["shrunk_se"]), np.array(info["shrunk"])
    scale = info["heterogeneity_scale"]
    # LCB: the damped effects minus z x the posterior standard error of each arm's level
    assert effects[E.ENGINE] == pytest.approx(effects[E.NO_LCB] - 1.5 * se[None, :])
    # damping: deviations from the shrunk level scaled by the clipped slope
    assert 0.05 <= scale <= 1.0
    assert effects[E.NO_LCB] - shrunk == pytest.approx(scale * (effects[E.NO_DAMPING] - shrunk))
    # shrinkage toward the mean of the two arms: the levels move toward each other
    att = np.array(info["att"])
    assert abs(shrunk[0] - shrunk[1]) <= abs(att[0] - att[1]) + 1e-12
    assert att[0] == pytest.approx(0.5, abs=0.15) and att[1] == pytest.approx(0.0, abs=0.15)
    # the mean effect on arm 1 is its shrunk level (the learner's readout moved there)
    assert effects[E.NO_DAMPING][:, 0].mean() == pytest.approx(shrunk[0], abs=0.1)
    # the send rule on the engine's effects: arm 1 to nearly everyone at a send cost of 0.1
    pi = send_policy(effects[E.ENGINE], 0.1)
    assert pi[:, 1].mean() > 0.9


def test_real_heterogeneity_survives_the_damping() -> None:
    # arm 1 helps (+1.5) when x1 > 0 and hurts (-1.5) otherwise; arm 2 does nothing
    X, y, arm = _randomised(6_000, 2, lambda a, X: 1.5 * (a == 1) * np.sign(X[:, 1]), 0.5)
    fit = E.engine_fit(0, base_params=FEW_TREES)
    effects, info = fit(X[:5_000], y[:5_000], arm[:5_000], X[5_000:], 3)
    assert info["heterogeneity_slope"] > 0.5
    pi = send_policy(effects[E.ENGINE], 0.1)
    good = X[5_000:, 1] > 0
    assert pi[good, 1].mean() > 0.85  # sent where it helps
    assert pi[~good, 1].mean() < 0.15  # not where it hurts


def test_a_wide_lower_bound_stops_sending_a_small_uncertain_effect() -> None:
    X, y, arm = _randomised(1_500, 3, lambda a, X: 0.15 * (a >= 1), noise=2.0)
    fit = E.engine_fit(0, base_params=FEW_TREES, uncertainty_z=5.0)
    effects, info = fit(X[:1_200], y[:1_200], arm[:1_200], X[1_200:], 3)
    assert min(info["shrunk_se"]) > 0.05
    assert send_policy(effects[E.ENGINE], 0.0)[:, 0].mean() > 0.95  # nobody is sent
    assert send_policy(effects[E.NO_LCB], 0.0)[:, 0].mean() < 0.5


def test_engine_fit_names_bad_settings() -> None:
    with pytest.raises(PolicyInputError, match="slope_share must be in"):
        E.engine_fit(0, slope_share=1.0)
    with pytest.raises(PolicyInputError, match="uncertainty_z must be a finite number"):
        E.engine_fit(0, uncertainty_z=float("nan"))
    with pytest.raises(PolicyInputError, match="uncertainty_z must lie in"):
        ArmsConfig(uncertainty_z=7.0)


def _arm_data(n: int = 3_000, groups: tuple[str, ...] | None = None) -> ArmData:
    X, y, arm = _randomised(n, 4, lambda a, X: 0.4 * (a == 1) - 0.2 * (a == 2))
    return ArmData(
        name="tiny",
        X=X,
        arm=arm.astype(np.int64),
        arms=("none", "a", "b"),
        arm_probability=np.full(3, 1 / 3),
        outcomes={"y": y},
        propensity_source="design",
        arm_groups=groups,
    )


def test_evaluation_reports_the_engine_its_variants_and_the_contrasts() -> None:
    config = ArmsConfig(n_splits=1, learners=("S",), peers=False, base_params=FEW_TREES,
                        send_cost={"y": 0.05}, uncertainty_z=0.0)  # fmt: skip
    report = evaluate_arms(_arm_data(groups=("none", "k1", "k2")), config)
    run = report["splits"][0]
    names = set(run["policies"])
    assert {E.ENGINE, E.NO_LCB, E.NO_DAMPING, E.NO_SHRINKAGE, "engine (previous)",
            "ours:S-uncalibrated"} <= names  # fmt: skip
    assert run["engine_fit"]["uncertainty_z"] == 0.0
    pieces = report["setup"]["engine_pieces"]
    assert pieces["uncertainty_z"] == 0.0 and pieces["slope_share"] == pytest.approx(0.2)
    assert pieces["shrinkage_groups"] == ["none", "k1", "k2"]
    # with z = 0 the engine is its no-LCB variant: the paired contrast is exactly 0
    zero = report["summary"]["y"]["engine_contrasts"]["engine_minus_no_lcb"][0]
    assert zero["value"] == 0.0 and zero["se"] == 0.0
    # arm a is worth 0.4 for everyone, b loses 0.2: the engine sends a to almost all
    assert run["policies"][E.ENGINE]["arm_shares"][1] > 0.9


def test_uncalibrated_engine_is_the_raw_learner_without_variants() -> None:
    config = ArmsConfig(n_splits=1, learners=("S",), peers=False, base_params=FEW_TREES,
                        calibrate_level=False)  # fmt: skip
    report = evaluate_arms(_arm_data(1_500), config)
    names = set(report["splits"][0]["policies"])
    assert E.ENGINE in names and E.NO_LCB not in names and "engine (previous)" not in names
    assert report["setup"]["engine_pieces"]["uncertainty_z"] == 0.0
    assert report["splits"][0]["engine_fit"] is None


def test_arm_groups_must_name_every_arm() -> None:
    with pytest.raises(PolicyInputError, match="arm_groups has 2 entries for 3 arms"):
        _arm_data(300, groups=("none", "k1"))


def test_settings_parser_reads_the_engine_pieces() -> None:
    got = parse_settings("hillstrom", ["uncertainty_z=0", "slope_share=0.3"])
    assert got == {"uncertainty_z": 0.0, "slope_share": 0.3}
    with pytest.raises(PolicyInputError, match=r"--set uncertainty_z='9': must lie in \[0, 5\]"):
        parse_settings("starbucks", ["uncertainty_z=9"])
    with pytest.raises(PolicyInputError, match="--set slope_share='x': not a number"):
        parse_settings("starbucks", ["slope_share=x"])
