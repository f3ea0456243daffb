"""The value goal at equal spend, including programs where every simple policy loses money."""

from __future__ import annotations

import pytest

from training.policy.simulated import goal_met


@pytest.mark.parametrize(
    ("engine", "best", "oracle_at", "oracle", "met"),
    [
        (130.0, 100.0, 300.0, 500.0, True),  # 1.3x the best, 43% of the oracle
        (129.0, 100.0, 300.0, 500.0, False),  # short of 1.3x
        (130.0, 100.0, 400.0, 500.0, False),  # 32.5% of the oracle at that spend
        (50.0, -100.0, 100.0, 300.0, True),  # simple policies lose money, the engine earns
        (-60.0, -100.0, 100.0, 300.0, False),  # 'better' than a loser, yet below holding out
        (0.0, 0.0, 0.0, 300.0, False),  # sends nothing: matched ratios trivially equal
        (0.0, 0.0, 0.0, 0.0, True),  # nothing to earn anywhere: holding out is right
    ],
)
def test_goal(engine: float, best: float, oracle_at: float, oracle: float, met: bool) -> None:
    assert goal_met(engine, best, oracle_at, oracle) is met
