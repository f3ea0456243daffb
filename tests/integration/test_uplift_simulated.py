"""Uplift on a small simulated program, scored against the simulator's true effects.

10,000 members, every opted-in member targeted by each of the 7 campaigns (about 27,000
training and 9,000 test rows); the S-learner with 50 trees, trained on the earlier campaigns
and scored on the latest ones (the time split of ``offers train uplift``).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from features.pipeline import tables_from_frames
from features.sim.simulate import SimConfig, simulate
from training.uplift.benchmark import BenchmarkConfig, run_benchmark
from training.uplift.data import TREATMENT, build_training_set
from training.uplift.fit import UpliftTrainSettings, fit_uplift
from training.uplift.simulated import (
    TAU,
    attach_truth,
    simulated_benchmark_data,
    truth_metrics,
)

pytestmark = pytest.mark.slow

FAST = {"n_estimators": 50, "learning_rate": 0.1, "min_child_samples": 200}
MEMBERS, SEED = 10_000, 12


@pytest.fixture(scope="module")
def program():
    return simulate(MEMBERS, seed=SEED, config=SimConfig(campaign_share=1.0))


@pytest.fixture(scope="module")
def scored(program):
    data = build_training_set(tables_from_frames(program))
    fitted = fit_uplift(data, UpliftTrainSettings(base_params=FAST))
    test = data.subset(np.flatnonzero(fitted.test))
    taus = attach_truth(test, program.truth["assignments"])
    tables = {}
    for outcome, pred in fitted.effects.items():
        rows = truth_metrics(test.frame[TREATMENT], pred, fitted.treatments, taus[TAU[outcome]])
        tables[outcome] = pd.DataFrame(rows).set_index("treatment")
    return fitted, tables


def test_truth_is_attached_to_every_treated_row(program) -> None:
    data = build_training_set(tables_from_frames(program))
    taus = attach_truth(data, program.truth["assignments"])
    treated = (data.frame[TREATMENT] != data.control).to_numpy()
    assert np.isfinite(taus.loc[treated, "tau_conversion"]).all()
    assert taus.loc[~treated].isna().all().all()
    # the simulator's effects are non-negative and conversion effects are probabilities
    assert (taus.loc[treated, "tau_conversion"].between(0, 1)).all()


def test_conversion_effects_correlate_clearly_with_the_truth(scored) -> None:
    _, tables = scored
    conv = tables["conversion"]
    assert conv.loc["all", "truth_corr"] > 0.3, conv
    big = conv.drop(index="all")
    big = big[big["rows"] >= 500]
    assert len(big) >= 4
    assert big["truth_corr"].median() > 0.3, big
    # level calibration: the average effect is right to within a third of its size
    assert abs(conv.loc["all", "ate_error"]) < conv.loc["all", "ate_true"] / 3, conv


def test_spend_effects_correlate_positively_with_the_truth(scored) -> None:
    _, tables = scored
    spend = tables["spend"]
    assert spend.loc["all", "truth_corr"] > 0.2, spend


def test_onnx_matches_the_native_model(scored) -> None:
    fitted, _ = scored
    assert fitted.parity["conversion"] <= 1e-4
    assert fitted.parity["spend"] <= 1e-4


def test_benchmark_harness_reports_truth_metrics(program, tmp_path) -> None:
    program.write(tmp_path / "sim")
    dataset, truth = simulated_benchmark_data(tmp_path / "sim")
    assert dataset.control == "control" and "bogo" in dataset.treatments
    assert set(truth) == {"conversion", "spend"}
    config = BenchmarkConfig(
        n_splits=1,
        libraries=("ours",),
        learners=("S", "CT"),
        base_params=FAST,
        treatments=("bogo", "credit"),
    )
    report = run_benchmark(dataset, config, truth=truth)
    rows = {(r["treatment"], r["outcome"], r["learner"]): r for r in report["results"]}
    # CT needs a binary outcome: fitted on conversion only
    assert ("bogo", "spend", "CT") not in rows and ("bogo", "conversion", "CT") in rows
    for key in (("bogo", "conversion", "S"), ("credit", "conversion", "S")):
        assert rows[key]["truth_corr"] > 0.2, rows[key]
        assert np.isfinite(rows[key]["ate_error"]) and rows[key]["ate_true"] > 0
