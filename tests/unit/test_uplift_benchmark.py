"""Benchmark harness on a tiny synthetic data set, our learners only (no peer libraries)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from offers import cmd_benchmark
from training.uplift import benchmark as uplift_benchmark
from training.uplift.benchmark import (
    BenchmarkConfig,
    PeerLibraryMissing,
    best_by_library,
    planned_models,
    report_markdown,
    run_benchmark,
)
from training.uplift.datasets import UpliftDataset

TINY = {"n_estimators": 20, "learning_rate": 0.1, "min_child_samples": 40}


def _dataset(n: int = 3_000, seed: int = 0) -> UpliftDataset:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    arm = rng.integers(0, 3, n)
    labels = np.array(["ctrl", "mail", "sms"], dtype=object)[arm]
    lift = 0.3 * (arm > 0) * (X["a"].to_numpy() > 0)
    y = (rng.random(n) < 0.15 + lift).astype(np.int64)
    return UpliftDataset(
        name="tiny",
        X=X,
        treatment=labels,
        control="ctrl",
        treatments=("mail", "sms"),
        outcomes={"buy": y},
    )


def test_report_shape_and_planted_effect() -> None:
    config = BenchmarkConfig(n_splits=2, libraries=("ours",), base_params=TINY)
    calls: list[str] = []
    report = run_benchmark(_dataset(), config, progress=calls.append)
    assert report["dataset"] == "tiny"
    assert report["n_splits"] == 2
    assert report["base_params"]["n_estimators"] == 20
    assert len(report["results"]) == 2 * 1 * 4  # treatments x outcomes x our learners
    assert len(calls) == 2 * 2 * 1 * 4  # splits x treatments x outcomes x models
    required = {"treatment", "outcome", "learner", "library", "qini", "qini_std", "auuc"}
    for row in report["results"]:
        assert required | {"uplift@30", "n_splits", "fit_seconds"} <= set(row)
        assert row["library"] == "ours"
        assert row["qini_std"] >= 0.0
        assert row["qini"] > 0.08, row  # the effect is planted on x_a > 0
    json.dumps(report)  # serialisable as is


def test_runs_are_reproducible_and_compare_on_the_same_splits() -> None:
    config = BenchmarkConfig(
        n_splits=2, libraries=("ours",), learners=("T",), base_params=TINY, outcomes=("buy",)
    )
    first = run_benchmark(_dataset(), config)["results"]
    second = run_benchmark(_dataset(), config)["results"]

    def scores(rows):
        return [{k: v for k, v in r.items() if not k.startswith("fit_seconds")} for r in rows]

    assert scores(first) == scores(second)


def test_best_by_library_picks_the_best_of_each_side() -> None:
    rows = [
        {"treatment": "m", "outcome": "v", "library": "ours", "learner": "T", "qini": 0.05},
        {"treatment": "m", "outcome": "v", "library": "ours", "learner": "X", "qini": 0.07},
        {"treatment": "m", "outcome": "v", "library": "sklift", "learner": "S", "qini": 0.08},
        {"treatment": "m", "outcome": "v", "library": "causalml", "learner": "T", "qini": 0.06},
    ]
    (best,) = best_by_library({"results": rows})
    assert best["ours"]["learner"] == "X"
    assert best["peer"]["library"] == "sklift"
    assert best["ours_wins"] is False


def test_missing_peer_library_is_named_with_its_pin(monkeypatch) -> None:
    monkeypatch.setattr(uplift_benchmark.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PeerLibraryMissing, match=r"causalml not installed: pip install causalml=="):
        planned_models(BenchmarkConfig(libraries=("ours", "causalml")))
    assert len(planned_models(BenchmarkConfig(libraries=("ours",)))) == 4

    app = typer.Typer()
    cmd_benchmark.register(app)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["benchmark", "uplift", "--libraries", "ours,sklift"])
    assert result.exit_code == 2
    assert "scikit-uplift==0.5.1" in result.output


def test_config_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown libraries \['pyuplift'\]"):
        BenchmarkConfig(libraries=("ours", "pyuplift"))
    with pytest.raises(ValueError, match=r"unknown learners \['R'\]"):
        BenchmarkConfig(learners=("R",))
    with pytest.raises(ValueError, match=r"n_splits must be >= 1; got 0"):
        BenchmarkConfig(n_splits=0)


def test_markdown_tables_name_every_model_and_the_verdict() -> None:
    rows = [
        {
            "treatment": "m",
            "outcome": "v",
            "library": lib,
            "learner": "T",
            "qini": q,
            "qini_std": 0.01,
            "auuc": q,
            "auuc_std": 0.01,
            "uplift@30": 0.02,
        }
        for lib, q in (("ours", 0.05), ("sklift", 0.04))
    ]
    text = report_markdown({"results": rows})
    assert "| m | v | T | 0.0500 ± 0.0100 | 0.0400 ± 0.0100 | 0.0500 ± 0.0100 | 0.0200 |" in text
    assert "| m | v | T 0.0500 | sklift T 0.0400 | yes |" in text
