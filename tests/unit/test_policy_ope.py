"""Policy evaluation pieces: truth of a send, off-policy estimators on a known bandit."""

from __future__ import annotations

import numpy as np
import pytest

from training.policy.evaluate import (
    LoggedDecisions,
    off_policy_estimates,
    one_hot,
    summary,
    truth_of_picks,
)


def test_truth_of_picks_known_answer():
    picks = np.array([[0, -1], [1, 0], [-1, -1]])
    p = np.array([[0.5, 0.1], [0.2, 0.4], [0.9, 0.9]])
    s = np.array([[10.0, 0.0], [4.0, 20.0], [99.0, 99.0]])
    cost = np.array([2.0, 5.0])
    got = truth_of_picks(picks, p, s, cost, margin_rate=0.5)
    # sends: (0,0): 5 - 1 = 4; (1,1): 10 - 2 = 8; (1,0): 2 - 0.4 = 1.6
    assert got["true_incremental_value"] == pytest.approx(13.6)
    assert got["spend"] == pytest.approx(1.0 + 2.0 + 0.4)
    assert got["redemptions"] == pytest.approx(1.1)
    assert got["sends"] == 3 and got["members_reached"] == 2


def bandit(n: int, seed: int = 0):
    """Uniform logging over 3 offers, or nothing with probability 0.25."""
    rng = np.random.default_rng(seed)
    m = 3
    x = rng.integers(0, 2, n)  # two context types
    value = np.array([[1.0, -0.5, 2.0], [3.0, 0.5, -1.0]])[x]  # true incremental value
    base = 5.0 + 2.0 * x  # reward without an offer
    control = rng.random(n) < 0.25
    action = np.where(control, -1, rng.integers(0, m, n))
    prop = np.where(control, 0.25, 0.75 / m)
    mean = base + np.where(action >= 0, value[np.arange(n), np.maximum(action, 0)], 0.0)
    reward = mean + rng.normal(0, 3.0, n)
    q = np.column_stack([base[:, None] + value, base])  # a perfect reward model
    return LoggedDecisions(action, prop, reward), value, q


def test_estimators_recover_the_true_value():
    logged, value, q = bandit(60_000)
    best = one_hot(np.argmax(value, axis=1), 3)
    uniform = np.full(value.shape, 1 / 3)
    nothing_if_bad = np.where(value > 1.5, 1.0, 0.0)  # send offer 2 / 0 only where worth it
    est = off_policy_estimates(
        logged, {"best": best, "uniform": uniform, "picky": nothing_if_bad}, q, value
    )
    for name, e in est.items():
        for k in ("ips", "dr"):
            assert abs(e[k] - e["truth"]) < 4 * e[f"{k}_se"] + 1e-9, (name, k, e)
        assert abs(e["snips"] - e["truth"]) < 0.15, (name, e)
    assert est["best"]["truth"] == pytest.approx(2.5, abs=0.02)  # (2 + 3) / 2
    assert est["uniform"]["truth"] == pytest.approx((2.5 + 2.5) / 6, abs=0.02)
    # with a perfect reward model, DR has far less variance than IPS
    assert est["best"]["dr_se"] < 0.5 * est["best"]["ips_se"]


def test_logged_decisions_are_validated():
    with pytest.raises(ValueError, match="propensities"):
        LoggedDecisions(np.array([0]), np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="lengths"):
        LoggedDecisions(np.array([0, 1]), np.array([0.5]), np.array([1.0]))


def test_summary_goal():
    top = {"true_incremental_value": 100.0, "spend": 50.0}
    ok = summary({"engine": {"true_incremental_value": 130.0, "spend": 40.0},
                  "affinity_top_k": top})  # fmt: skip
    assert ok["goal_met"] and ok["value_ratio"] == pytest.approx(1.3)
    pricier = summary({"engine": {"true_incremental_value": 150.0, "spend": 60.0},
                       "affinity_top_k": top})  # fmt: skip
    assert not pricier["goal_met"] and pricier["spend_ratio"] == pytest.approx(1.2)


def test_every_policy_of_the_evaluation_respects_consent():
    """Policy evaluation: the engine and every baseline (affinity top-k, random, oracle) act
    on the engine's eligibility, so an e-mail opt-out gets nothing from any of them."""
    from serving.engine import DecisionContext, DecisionEngine, EngineSettings, ScoreInputs
    from serving.engine.settings import ExplorationSettings, HoldoutSettings
    from tests.support.engine import AS_OF, catalog, member, members
    from training.policy.evaluate import evaluate_send

    rows = [member(email_opt_in=(i % 3 != 0)) for i in range(12)]
    frame = members(*rows)
    settings = EngineSettings(
        k=2, holdout=HoldoutSettings(share=0.0), exploration=ExplorationSettings(epsilon=0.0)
    )
    engine = DecisionEngine(catalog(), settings)
    n, m = len(frame), engine.offers.n
    rng = np.random.default_rng(0)
    inputs = ScoreInputs(rng.uniform(0.05, 0.5, (n, m)), rng.normal(20, 5, (n, m)))
    ctx = DecisionContext("email", AS_OF, "consent-test", k=2)
    true_p, true_s = rng.uniform(0.05, 0.5, (n, m)), rng.normal(20, 5, (n, m))
    results, batch = evaluate_send(engine, frame, inputs, ctx, inputs.p_redeem, true_p, true_s)
    out = np.array([i % 3 == 0 for i in range(n)])
    assert (batch.picks[out] < 0).all() and (batch.picks[~out] >= 0).any()
    pr = engine.prepare(frame, inputs, ctx)
    assert not pr.mask[out].any()  # the mask every baseline allocates on
    assert results["random"]["members_reached"] <= int((~out).sum())
    assert results["oracle"]["members_reached"] <= int((~out).sum())
