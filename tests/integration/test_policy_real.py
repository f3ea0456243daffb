"""Policy value on the real randomised data (small and fast: subsamples, few splits)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving.engine.settings import ScoringSettings
from training.policy.run import run_dataset

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ESTIMATE_KEYS = {"value", "se", "low", "high", "n"}
POLICY_KEYS = {"value", "value_snips", "incremental", "net_incremental", "send_share",
               "arm_shares"}  # fmt: skip


def _check_estimate(e: dict) -> None:
    assert set(e) == ESTIMATE_KEYS
    assert e["low"] <= e["value"] <= e["high"]
    assert e["se"] >= 0


def _check_arms_report(report: dict, outcomes: tuple[str, ...], n_splits: int) -> None:
    assert set(report) >= {"dataset", "rows", "arms", "arm_probability", "propensity_source",
                           "setup", "splits", "summary"}  # fmt: skip
    assert sum(report["arm_probability"]) == pytest.approx(1.0)
    assert len(report["splits"]) == n_splits * len(outcomes)
    n_arms = len(report["arms"])
    for run in report["splits"]:
        policies = run["policies"]
        assert {"engine", "random", "nobody"} <= set(policies)
        assert sum(name.startswith("all:") for name in policies) == n_arms - 1
        for name, v in policies.items():
            assert set(v) >= POLICY_KEYS, name
            for key in ("value", "incremental", "net_incremental"):
                _check_estimate(v[key])
            assert 0.0 <= v["send_share"] <= 1.0
            assert len(v["arm_shares"]) == n_arms
        nobody = policies["nobody"]
        assert nobody["incremental"]["value"] == 0.0 and nobody["incremental"]["se"] == 0.0
        assert nobody["net_incremental"]["value"] == 0.0 and nobody["send_share"] == 0.0
        # net = incremental - cost x send share, exactly
        engine = policies["engine"]
        assert engine["net_incremental"]["value"] == pytest.approx(
            engine["incremental"]["value"] - run["send_cost"] * engine["send_share"]
        )
    for outcome in outcomes:
        summary = report["summary"][outcome]
        assert summary["chosen"]["best_fixed"].startswith("all:")
        rows = summary["engine_contrasts"]["engine_minus_best_fixed"]
        assert len(rows) == n_splits
        for e in rows:
            _check_estimate(e)


@pytest.fixture(scope="module")
def hillstrom_report(shared_data):
    settings = {"splits": 2, "sample": 9_000, "outcomes": ("visit", "spend"), "peers": False,
                "learners": ("S",), "trees": 40}  # fmt: skip
    return run_dataset("hillstrom", settings, seed=0, data_dir=shared_data)


def test_hillstrom_report_shape_and_invariants(hillstrom_report) -> None:
    _check_arms_report(hillstrom_report, ("visit", "spend"), 2)
    assert hillstrom_report["arms"] == ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]
    assert hillstrom_report["arm_probability"] == pytest.approx([1 / 3] * 3)
    assert hillstrom_report["setup"]["send_cost"] == {"visit": 0.0, "spend": 0.10}
    # the engine's learner is level-calibrated as shipped; the raw learner is reported beside it
    assert hillstrom_report["setup"]["engine_level_calibration"] is True
    assert "ours:S-uncalibrated" in hillstrom_report["splits"][0]["policies"]
    # the shipped pieces: shrinkage, damping, the engine's default lower bound; each variant
    pieces = hillstrom_report["setup"]["engine_pieces"]
    assert pieces["uncertainty_z"] == ScoringSettings().uncertainty_z
    assert pieces["shrinkage"] and pieces["damping"]
    for run in hillstrom_report["splits"]:
        assert {"engine (no LCB)", "engine (no LCB, no damping)", "engine (previous)",
                "engine (no LCB, no damping, no shrinkage)"} <= set(run["policies"])  # fmt: skip
        fit = run["engine_fit"]
        assert fit["rows_fit"] + fit["rows_slope"] == run["n_train"]
        assert 0.05 <= fit["heterogeneity_scale"] <= 1.0
        # a shrunk level has a smaller standard error than the raw one it came from
        assert all(s <= r + 1e-12 for s, r in zip(fit["shrunk_se"], fit["att_se"], strict=True))


def test_hillstrom_random_policy_is_the_logging_policy(hillstrom_report, shared_data) -> None:
    """Random over the three arms with propensity 1/3 is the design itself: IPS = test mean."""
    from sklearn.model_selection import StratifiedShuffleSplit

    from training.policy.hillstrom import load_arms

    data = load_arms(shared_data)
    rows = np.sort(np.random.default_rng(0).choice(data.X.shape[0], 9_000, replace=False))
    arm, visit = data.arm[rows], data.outcomes["visit"][rows]
    splits = StratifiedShuffleSplit(2, test_size=0.3, random_state=0).split(np.zeros(9_000), arm)
    first = [r for r in hillstrom_report["splits"] if r["outcome"] == "visit"]
    for run, (_, test) in zip(first, splits, strict=True):
        assert run["policies"]["random"]["value"]["value"] == pytest.approx(visit[test].mean())
        nobody = run["policies"]["nobody"]["value"]["value"]
        assert nobody == pytest.approx(3 * visit[test][arm[test] == 0].sum() / test.size)


def test_hillstrom_emails_raise_visits(hillstrom_report) -> None:
    """The published effect (Mens 0.183 vs none 0.106) is visible on the subsample."""
    for run in hillstrom_report["splits"]:
        if run["outcome"] == "visit":
            mens = run["policies"]["all:Mens E-Mail"]["incremental"]
            assert mens["low"] > 0.0


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("causalml", "sklift")),
    reason="peer libraries (the 'bench' extra) not installed",
)
def test_hillstrom_peers_run_when_installed(shared_data) -> None:
    settings = {"splits": 1, "sample": 4_000, "outcomes": ("visit",), "learners": ("S",),
                "trees": 20, "forest_trees": 3}  # fmt: skip
    report = run_dataset("hillstrom", settings, seed=0, data_dir=shared_data)
    policies = report["splits"][0]["policies"]
    for peer in ("causalml:R", "causalml:DR", "causalml:UpliftRF", "sklift:CT"):
        assert peer in policies
        _check_estimate(policies[peer]["net_incremental"])
    assert report["summary"]["visit"]["chosen"]["best_peer"] is not None


def test_starbucks_balance_and_report(shared_data) -> None:
    settings = {"splits": 1, "sample": 6_000, "outcomes": ("purchase",), "peers": False,
                "learners": ("S",), "trees": 30}  # fmt: skip
    report = run_dataset("starbucks", settings, seed=0, data_dir=shared_data)
    _check_arms_report(report, ("purchase",), 1)
    assert len(report["arms"]) == 11 and report["arms"][0] == "none"
    balance = report["notes"]["balance"]
    assert set(balance["tests"]) == {"age", "income", "gender", "tenure", "offer_shares_equal"}
    assert balance["balanced"] is True  # the simulator assigns offers at random
    counts = report["notes"]["arm_counts"]
    assert sum(counts) == 17_000
    assert report["arm_probability"] == pytest.approx(np.array(counts) / 17_000)


def test_open_bandit_report(shared_data) -> None:
    report = run_dataset("open-bandit", {"bootstrap": 20}, seed=0, data_dir=shared_data)
    assert report["rows"] == {"random": 10_000, "bts": 10_000}
    assert report["clicks"] == {"random": 38, "bts": 42}
    truth = report["on_policy"]["value"]
    assert truth == pytest.approx(0.0042)
    assert report["null_reference"]["value"] == pytest.approx(0.0038)
    assert report["null_reference"]["relative_error"] == pytest.approx(0.0004 / 0.0042)
    for block in report["by_buckets"].values():
        assert set(block["estimates"]) == {"ips", "snips", "dr", "dm"}
        for e in block["estimates"].values():
            _check_estimate({k: e[k] for k in ESTIMATE_KEYS})
            assert e["relative_error"] == pytest.approx(abs(e["value"] - truth) / truth)
        assert set(block["bootstrap"]) == {"ips", "snips", "dr", "dm"}
    # the evaluation policy's weights average about 1 on the uniform logs (a distribution)
    assert 0.8 < report["mean_weight"] < 1.2
    assert report["estimates"] == report["by_buckets"]["day"]["estimates"]


def test_cli_json_and_bad_setting(shared_data) -> None:
    env = {**os.environ, "OFFERS_SHARED_DATA": str(shared_data)}
    cmd = [sys.executable, "-m", "offers", "evaluate", "policy", "--dataset", "open-bandit"]
    out = subprocess.run([*cmd, "--json", "--set", "bootstrap=5"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["bootstrap"]["n"] == 5 and report["campaign"] == "all"
    bad = subprocess.run([*cmd, "--set", "buckets=month"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)  # fmt: skip
    assert bad.returncode == 1
    assert "buckets='month'" in bad.stderr
