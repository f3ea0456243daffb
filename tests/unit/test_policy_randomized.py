"""Off-policy estimators, the send rule and the settings parser on tiny data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.policy.open_bandit import _bts_distribution, _policy_matrix
from training.policy.policies import fixed_arm, one_hot, send_policy, send_share, uniform
from training.policy.randomized import (
    Z95,
    Estimate,
    PolicyInputError,
    dr,
    ips,
    ips_contrast,
    snips,
)
from training.policy.run import parse_settings
from training.policy.starbucks import balance_test

# four logged rows, two actions: hand-computed values below
ACTIONS = np.array([0, 1, 0, 1])
REWARDS = np.array([1.0, 2.0, 3.0, 4.0])
PROPS = np.array([0.5, 0.25, 0.5, 0.75])
ALWAYS_1 = np.array([[0.0, 1.0]] * 4)


def _uniform_logs(n: int, m: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, m, n)
    r = (rng.random(n) < 0.2 + 0.1 * a).astype(float)
    return a, r, np.full(n, 1.0 / m)


def test_logged_uniform_policy_on_itself_is_the_sample_mean() -> None:
    a, r, p = _uniform_logs(2_000, 4, seed=1)
    pi = uniform(len(a), 4)
    est = ips(a, r, p, pi)
    assert est.value == pytest.approx(r.mean(), rel=1e-12)
    assert est.se == pytest.approx(r.std(ddof=1) / np.sqrt(len(r)), rel=1e-12)
    assert snips(a, r, p, pi).value == pytest.approx(r.mean(), rel=1e-12)
    assert est.n == 2_000


def test_deterministic_policy_ips_and_snips_hand_computed() -> None:
    # weights 0, 4, 0, 4/3: IPS = (8 + 16/3) / 4 = 10/3; SNIPS = (40/3) / (16/3) = 2.5
    assert ips(ACTIONS, REWARDS, PROPS, ALWAYS_1).value == pytest.approx(10 / 3)
    assert snips(ACTIONS, REWARDS, PROPS, ALWAYS_1).value == pytest.approx(2.5)
    terms = np.array([0.0, 8.0, 0.0, 16 / 3])
    assert ips(ACTIONS, REWARDS, PROPS, ALWAYS_1).se == pytest.approx(terms.std(ddof=1) / 2)


def test_interval_is_the_point_plus_minus_1_96_se() -> None:
    est = ips(ACTIONS, REWARDS, PROPS, ALWAYS_1)
    assert est.low == pytest.approx(est.value - Z95 * est.se)
    assert est.high == pytest.approx(est.value + Z95 * est.se)
    assert est.low < est.value < est.high
    shifted = est.shifted(-1.0)
    assert (shifted.value, shifted.low, shifted.se) == pytest.approx(
        (est.value - 1, est.low - 1, est.se)
    )


def test_intervals_shrink_with_n() -> None:
    small = ips(*_uniform_logs(1_000, 3, seed=2), one_hot(np.zeros(1_000, int), 3))
    large = ips(*_uniform_logs(16_000, 3, seed=2), one_hot(np.zeros(16_000, int), 3))
    # sixteen times the rows: about a quarter of the width
    assert large.high - large.low < 0.4 * (small.high - small.low)


def test_ips_interval_covers_a_known_value() -> None:
    # always action 2 whose click rate is 0.4 by construction
    a, r, p = _uniform_logs(30_000, 3, seed=3)
    est = ips(a, r, p, one_hot(np.full(30_000, 2), 3))
    assert est.low < 0.4 < est.high
    assert abs(est.value - 0.4) < 0.03


def test_dr_with_exact_reward_model_has_no_variance_and_with_zero_model_is_ips() -> None:
    q = np.tile([[10.0, 20.0]], (4, 1))
    rewards = q[np.arange(4), ACTIONS]
    exact = dr(ACTIONS, rewards, PROPS, ALWAYS_1, q)
    assert exact.value == pytest.approx(20.0)
    assert exact.se == pytest.approx(0.0)
    zero = dr(ACTIONS, REWARDS, PROPS, ALWAYS_1, np.zeros((4, 2)))
    assert zero.value == pytest.approx(ips(ACTIONS, REWARDS, PROPS, ALWAYS_1).value)


def test_contrast_of_a_policy_with_itself_is_zero_and_matches_the_difference() -> None:
    a, r, p = _uniform_logs(500, 3, seed=4)
    pi1, pi0 = fixed_arm(500, 3, 1), fixed_arm(500, 3, 0)
    same = ips_contrast(a, r, p, pi1, pi1)
    assert (same.value, same.se) == (0.0, 0.0)
    diff = ips_contrast(a, r, p, pi1, pi0)
    assert diff.value == pytest.approx(ips(a, r, p, pi1).value - ips(a, r, p, pi0).value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"propensities": [0.5, 0.0, 0.5, 0.5]}, "propensities must lie in \\(0, 1\\]; row 1"),
        ({"propensities": [0.5, 1.5, 0.5, 0.5]}, "row 1 is 1.5"),
        ({"actions": [0, 1, 2, 0]}, "actions must lie in \\[0, 2\\).*row 2 is 2"),
        ({"actions": [0.0, 1.0, 0.0, 1.0]}, "actions must be integers"),
        ({"rewards": [1.0, np.nan, 1.0, 1.0]}, "rewards must be finite; row 1"),
        ({"rewards": [1.0, 2.0, 3.0]}, "rewards has 3 rows but actions has 4"),
        ({"policy": [[0.7, 0.7]] * 4}, "policy rows must sum to at most 1; row 0"),
        ({"policy": [[-0.1, 1.0]] * 4}, "policy probabilities must lie in \\[0, 1\\]"),
        ({"policy": [[1.0, 0.0]] * 3}, "policy must have shape \\(n=4"),
        ({"actions": []}, "actions is empty"),
    ],
)
def test_bad_inputs_name_the_field_and_value(kwargs, message) -> None:
    args = {"actions": ACTIONS, "rewards": REWARDS, "propensities": PROPS, "policy": ALWAYS_1}
    args |= {k: np.asarray(v) for k, v in kwargs.items()}
    if "actions" in kwargs and len(kwargs["actions"]) == 0:
        args["actions"] = np.array([], dtype=int)
    with pytest.raises(PolicyInputError, match=message):
        ips(**args)


def test_snips_refuses_a_policy_that_never_takes_a_logged_action() -> None:
    with pytest.raises(PolicyInputError, match="probability 0 to every logged action"):
        snips(np.array([0, 0]), np.array([1.0, 0.0]), np.array([0.5, 0.5]), [[0.0, 1.0]] * 2)


def test_dr_checks_the_reward_model_shape() -> None:
    with pytest.raises(PolicyInputError, match="q must have shape"):
        dr(ACTIONS, REWARDS, PROPS, ALWAYS_1, np.zeros((3, 2)))


def test_send_policy_picks_the_best_net_arm_or_none() -> None:
    effects = np.array([[0.10, 0.30], [0.05, 0.02], [-1.0, -2.0], [0.04, 0.01]])
    pi = send_policy(effects, cost=0.04)
    assert pi.argmax(axis=1).tolist() == [2, 1, 0, 0]  # 0.04 - 0.04 is not above 0: none
    per_arm = send_policy(effects, cost=[0.0, 0.25])  # arm 2 costs more
    assert per_arm.argmax(axis=1).tolist() == [1, 1, 0, 1]
    assert send_share(pi) == pytest.approx(0.5)
    with pytest.raises(PolicyInputError, match="effects must be finite; row 0, arm 1"):
        send_policy(np.array([[0.1, np.nan]]))
    with pytest.raises(PolicyInputError, match="cost must be finite and >= 0"):
        send_policy(effects, cost=-1.0)


def test_balance_test_accepts_random_assignment_and_rejects_a_dependent_one() -> None:
    rng = np.random.default_rng(5)
    n = 6_000
    attribute = pd.Series(rng.choice(["a", "b", "c"], n))
    random_arm = rng.integers(0, 4, n)
    ok = balance_test(random_arm, {"attr": attribute})
    assert ok["balanced"] is True
    dependent = np.where(attribute == "a", rng.integers(0, 2, n), rng.integers(0, 4, n))
    bad = balance_test(dependent, {"attr": attribute})
    assert bad["balanced"] is False
    assert bad["tests"]["attr"]["p_value"] < 1e-6


def test_bts_distribution_is_the_empirical_item_share_per_position_and_day() -> None:
    bts = pd.DataFrame(
        {
            "item": [0, 1, 1, 2, 0, 0],
            "position": [0, 0, 0, 1, 1, 2],
            "day": ["d1", "d1", "d2", "d1", "d2", "d2"],
        }
    )
    with pytest.raises(PolicyInputError, match="a position has no impressions"):
        _bts_distribution(bts, 3, "day")
    week = _bts_distribution(bts, 3, "week")["week"]
    assert week[0].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert week.sum(axis=1) == pytest.approx([1, 1, 1])
    rand = pd.DataFrame({"position": [0, 2], "day": ["d1", "d2"]})
    assert _policy_matrix(rand, {"week": week}, "week")[1].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(PolicyInputError, match="buckets must be one of"):
        _bts_distribution(bts, 3, "month")


def test_settings_parser_types_values_and_names_bad_ones() -> None:
    got = parse_settings(
        "hillstrom", ["splits=2", "cost.spend=0.5", "peers=false", "outcomes=visit"]
    )
    assert got == {"splits": 2, "cost": {"spend": 0.5}, "peers": False, "outcomes": ("visit",)}
    assert parse_settings("open-bandit", ["buckets=week", "bootstrap=0"]) == {
        "buckets": "week",
        "bootstrap": 0,
    }
    with pytest.raises(PolicyInputError, match="--set 'tres': unknown for hillstrom"):
        parse_settings("hillstrom", ["tres=5"])
    with pytest.raises(PolicyInputError, match="--set splits='two': not an integer"):
        parse_settings("starbucks", ["splits=two"])
    with pytest.raises(PolicyInputError, match=r"--set cost\.visit='-1': a cost must be >= 0"):
        parse_settings("hillstrom", ["cost.visit=-1"])
    with pytest.raises(PolicyInputError, match="--set buckets='month'"):
        parse_settings("open-bandit", ["buckets=month"])
    assert parse_settings("starbucks", ["calibrate=FALSE"]) == {"calibrate": False}
    with pytest.raises(PolicyInputError, match="--set calibrate='maybe': expected true or false"):
        parse_settings("starbucks", ["calibrate=maybe"])
    with pytest.raises(PolicyInputError, match="--dataset 'criteo'"):
        parse_settings("criteo", [])


def test_estimate_round_trips_to_a_dict() -> None:
    e = Estimate.from_mean(1.0, 0.5, 10)
    assert e.to_dict() == {"value": 1.0, "se": 0.5, "low": e.low, "high": e.high, "n": 10}
