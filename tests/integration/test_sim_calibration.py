"""The realistic simulator next to the real data sets: the same figures, computed by the same
code (features.sim.calibrate), must be of the same size (docs/simulator.md, "Calibration")."""

from __future__ import annotations

import pytest

from features.sim.calibrate import real_stats, sim_stats
from features.sim.simulate import SimConfig, simulate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(shared_data):
    return real_stats(shared_data)


@pytest.fixture(scope="module")
def sim():
    return sim_stats(simulate(12_000, seed=5, config=SimConfig(difficulty="realistic")), r2=False)


def test_persuasion_is_of_the_size_of_the_hillstrom_e_mails(real, sim) -> None:
    h = real["hillstrom"]
    arms = [h["lift_low_baseline_pp_womens"], h["lift_low_baseline_pp_mens"]]
    assert min(arms) / 2 <= sim["tau_conv_low_baseline_pp"] <= 2 * max(arms)
    conv = [
        h["converted_share_of_non_buyers_pct_womens"],
        h["converted_share_of_non_buyers_pct_mens"],
    ]
    assert min(conv) / 2 <= sim["converted_share_of_non_buyers_pct"] <= 2 * max(conv)
    # Hillstrom is flat by recency; so is the simulator's true effect (within a factor 2).
    lifts = [v for k, v in h.items() if k.startswith("lift_recency_") and k.endswith("_pp")]
    assert max(lifts) / min(lifts) < 2
    ours = [v for k, v in sim.items() if k.startswith("tau_conv_at_end_recency_")]
    assert max(ours) / min(ours) < 2.5


def test_redemptions_without_a_view_as_in_starbucks(real, sim) -> None:
    assert (
        abs(sim["redeemed_without_view_share"] - real["starbucks"]["redeemed_without_view_share"])
        < 0.1
    )


def test_purchases_as_in_the_complete_journey(real, sim) -> None:
    cj = real["complete_journey"]
    assert abs(sim["top20_spend_share"] - cj["top20_spend_share"]) < 0.05
    for k in ("basket_mean", "basket_median", "basket_p90"):
        assert 0.7 <= sim[k] / cj[k] <= 1.5, k
