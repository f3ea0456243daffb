"""The spend level over the longer window: a send that pulls purchases forward gains in the
14-day window and loses the replaced basket later, so the level must be the net effect.

A hand-made training set with a known answer: treatment ``a`` adds 5 to the 14-day spend and
takes 8 away over the following 30 days (net -3 over 44 days); treatment ``b`` adds 2 and takes
nothing away (net +2). Six campaigns, the last one held out as the test split.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from features.pipeline.config import FeatureConfig
from features.sources import schema as S
from training.uplift.data import TrainingSetConfig, UpliftTrainingSet
from training.uplift.fit import UpliftTrainSettings, fit_uplift

FAST = {"n_estimators": 30, "learning_rate": 0.1, "min_child_samples": 100}
ROWS_PER_CAMPAIGN = 3_000
START = pd.Timestamp("2025-01-05")


def _training_set(level_known: str = "all", seed: int = 0) -> UpliftTrainingSet:
    rng = np.random.default_rng(seed)
    frames = []
    for c in range(6):
        n = ROWS_PER_CAMPAIGN
        arm = rng.choice(["control", "a", "b"], size=n, p=[0.3, 0.35, 0.35])
        x = rng.normal(size=n)
        base = 20 + 5 * x + rng.normal(scale=4, size=n)
        later = 40 + 10 * x + rng.normal(scale=6, size=n)  # the next 30 days without a send
        short = base + np.where(arm == "a", 5.0, 0.0) + np.where(arm == "b", 2.0, 0.0)
        long = short + later - np.where(arm == "a", 8.0, 0.0)
        frames.append(
            pd.DataFrame(
                {
                    S.EVENT_ID: [f"e{c}-{i}" for i in range(n)],
                    S.MEMBER_ID: [f"m{c}-{i}" for i in range(n)],
                    S.TS: START + pd.Timedelta(days=30 * c),
                    S.CAMPAIGN_ID: f"c{c}",
                    "treatment": arm,
                    "conversion": (short > 20).astype(np.int64),
                    "spend": short,
                    "spend_level": long,
                    "x": x,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    if level_known == "none_for_a":
        frame.loc[frame["treatment"] == "a", "spend_level"] = np.nan
    return UpliftTrainingSet(
        frame,
        ("x",),
        TrainingSetConfig(treatment="kind", level_window_days=44.0),
        FeatureConfig(),
        pd.Timestamp("2025-08-01"),
    )


def _settings(**kw) -> UpliftTrainSettings:
    kw.setdefault("level_window_days", 44.0)
    return UpliftTrainSettings(
        treatment="kind",
        base_params=FAST,
        shrink_level=False,
        damp_heterogeneity=False,
        test_share=0.15,
        **kw,
    )


def test_the_spend_level_is_the_net_effect_over_the_level_window() -> None:
    fitted = fit_uplift(_training_set(), _settings())
    m = fitted.metrics
    assert m["level_window.spend"] == pytest.approx(44.0)
    assert m["level_att.spend.a"] == pytest.approx(-3.0, abs=1.2)
    assert m["level_att.spend.b"] == pytest.approx(2.0, abs=1.2)
    # the model's mean effect on the test rows follows the net level, its sign included
    a = fitted.treatments.index("a")
    assert np.nanmean(fitted.effects["spend"][:, a]) == pytest.approx(-3.0, abs=1.5)
    # the conversion level stays on the 14-day window
    assert "level_window.conversion" not in m


def test_without_a_level_window_the_level_is_the_14_day_gain() -> None:
    fitted = fit_uplift(_training_set(), _settings(level_window_days=None))
    assert fitted.metrics["level_window.spend"] == pytest.approx(14.0)
    assert fitted.metrics["level_att.spend.a"] == pytest.approx(5.0, abs=1.0)


def test_too_few_known_level_outcomes_fall_back_to_the_outcome_window(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="training.uplift.fit"):
        fitted = fit_uplift(_training_set("none_for_a"), _settings())
    assert fitted.metrics["level_window.spend"] == pytest.approx(14.0)
    assert fitted.metrics["level_att.spend.a"] == pytest.approx(5.0, abs=1.0)
    assert "{'a': 0}" in caplog.text


def test_a_level_window_shorter_than_the_outcome_window_is_refused() -> None:
    with pytest.raises(ValueError, match=r"level_window_days must be >= window_days \(14\)"):
        UpliftTrainSettings(level_window_days=7.0)


@pytest.mark.parametrize("level_window_days", [44.0, None])
def test_the_level_by_campaign_setting_measures_within_campaigns(level_window_days) -> None:
    on = fit_uplift(
        _training_set(), _settings(level_window_days=level_window_days, level_by_campaign=True)
    )
    off = fit_uplift(_training_set(), _settings(level_window_days=level_window_days))
    expected = -3.0 if level_window_days else 5.0
    for fitted in (on, off):
        assert fitted.metrics["level_att.spend.a"] == pytest.approx(expected, abs=1.2)
    # the campaigns are read (6 rows' campaigns less the test split's, 2 arms each)
    assert on.metrics["level_campaign_cells.spend"] >= 8
    assert on.metrics["level_tau2_campaign.spend"] >= 0
    assert "level_tau2_campaign.spend" not in off.metrics
    # the control group's noise is now in the standard error
    assert on.metrics["level_se.spend.a"] > off.metrics["level_se.spend.a"]
