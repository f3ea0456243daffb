"""The evaluation harness end to end on a tiny simulated program: chronology, population, report
shape, the JSON of ``offers evaluate affinity``, and the pyfunc's predict without MLflow."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from features.sim.simulate import simulate
from models.affinity import RedeemCalibrator
from models.affinity.pyfunc import AffinityPyfunc, save_artifacts
from offers import cmd_affinity
from training.affinity.evaluate import (
    EvalInputError,
    EvalSettings,
    build_task,
    choose_windows,
)
from training.affinity.report import MODEL_ORDER, SHIPPED, run_evaluation
from training.affinity.search import ALS_DEFAULT, ALS_SPACE, SearchSettings, sample_configs

FAST = SearchSettings(als_trials=1, bpr_trials=1, bpr_fixed={"factors": 8, "iterations": 20})


@pytest.fixture(scope="module")
def program():
    return simulate(600, seed=5)


@pytest.fixture(scope="module")
def tables(program):
    return {t: getattr(program, t) for t in ("members", "offers", "transactions", "offer_events")}


@pytest.fixture(scope="module")
def run(tables):
    settings = EvalSettings(candidates="all")
    return run_evaluation(tables, settings, FAST, "sim-600")


def test_windows_are_ordered_and_default_to_the_last_fifth(tables):
    w = choose_windows(tables, EvalSettings())
    ts = tables["offer_events"]["ts"]
    assert w.valid_start < w.test_start < w.test_end and w.test_end > ts.max()
    share = (w.test_end - w.test_start) / (ts.max() - ts.min())
    assert 0.15 < share < 0.25
    assert w.test_start - w.valid_start == w.test_end - w.test_start  # same length
    with pytest.raises(EvalInputError, match="outside the data"):
        choose_windows(tables, EvalSettings(split="1990-01-01"))


def test_task_trains_strictly_before_the_window_and_counts_active_members(tables):
    w = choose_windows(tables, EvalSettings())
    task = build_task(tables, w.test_start, w.test_end, EvalSettings(candidates="all"), tables)
    assert task.train.as_of == w.test_start
    ev = tables["offer_events"]
    red = ev[(ev.event == "redeemed") & (ev.ts >= w.test_start) & (ev.ts < w.test_end)]
    members = set(task.train.member_ids[task.rows])
    assert members <= set(red.member_id)  # a positive in the window
    assert all(task.train.confidence[r].nnz > 0 for r in task.rows)  # active before T
    assert task.pair_labels is not None and task.pair_labels.sum() > 0


def test_held_candidates_are_what_members_held(tables):
    w = choose_windows(tables, EvalSettings())
    task = build_task(tables, w.test_start, w.test_end, EvalSettings(min_candidates=2), tables)
    assert task.eligible is not None and (task.eligible.sum(axis=1) >= 2).all()
    # every relevant offer is an eligible one
    rel = task.relevant[:, task.candidates].toarray() > 0
    assert not (rel & ~task.eligible).any()
    # informational offers cannot be redeemed: never candidates
    offers = tables["offers"]
    info = {f"offer:{o}" for o in offers.loc[offers.kind == "informational", "offer_id"]}
    assert info and not info & set(task.train.item_ids[task.candidates])


def test_report_has_every_model_and_the_issue_shape(run):
    r = run.report
    assert r["dataset"] == "sim-600" and r["shipped"] == SHIPPED
    assert set(r["models"]) == set(MODEL_ORDER)
    for metrics in r["models"].values():
        for k in (1, 3, 5, 10):
            for m in ("precision", "recall", "ndcg", "map"):
                assert 0.0 <= metrics[f"{m}@{k}"] <= 1.0
        shares = sum(
            metrics[f"share_{f}"] for f in ("personalised", "segment_popular", "global_popular")
        )
        assert shares == pytest.approx(1.0)
    assert r["models"]["popularity"]["share_global_popular"] == 1.0
    assert {"train_end", "test_end", "valid_start"} <= set(r["split"])
    assert r["calibration"]["brier"] >= 0
    # the default settings give the calibrator's default design (names: test_redeem_member_terms)
    assert tuple(r["calibration"]["member_terms"]) == RedeemCalibrator().member_term_names()
    json.dumps(r)  # serialisable as it is


def test_the_member_term_design_follows_the_settings(tables):
    flat = EvalSettings(
        candidates="all", calibration_recency_knots=(), calibration_no_purchase=False
    )
    r = run_evaluation(tables, flat, FAST, "sim-600-flat").report
    assert list(r["calibration"]["member_terms"]) == ["intercept", "activity", "recency"]
    r = run_evaluation(
        tables, flat.model_copy(update={"calibration_recency_knots": (30.0,)}), FAST, "x"
    ).report
    assert list(r["calibration"]["member_terms"])[-1] == "recency_past_30d"
    banded = run_evaluation(
        tables, EvalSettings(candidates="all", calibration_band_offsets=True), FAST, "y"
    ).calibrator
    assert banded is not None and banded.band_offsets_.shape == (len(banded.groups_), 3)
    with pytest.raises(ValueError, match=r"calibration_recency_knots: days must be .*-1"):
        EvalSettings(calibration_recency_knots=(45.0, -1.0))


def test_pyfunc_predict_ranks_candidates_and_folds_in_a_basket(run, tmp_path):
    arts = save_artifacts(run.shipped, run.test_task.train, tmp_path, run.calibrator)
    model = AffinityPyfunc().load(arts)
    task = run.test_task
    member = str(task.train.member_ids[task.rows[0]])
    offers = [k.split(":", 1)[1] for k in task.train.item_ids[task.candidates[:4]]]
    query = pd.DataFrame({"member_id": [member] * 4 + ["ghost"], "offer_id": [*offers, "nope"]})
    out = model.predict(None, query)
    assert out["member_id"].tolist() == query["member_id"].tolist()
    assert sorted(out["rank"].iloc[:4]) == [1, 2, 3, 4]
    assert out["fallback"].iloc[4] == "unknown_offer" and np.isnan(out["score"].iloc[4])
    assert ((out["p_redeem"].iloc[:4] >= 0) & (out["p_redeem"].iloc[:4] <= 1)).all()
    direct = run.shipped.score(task.batch(task.rows[:1]), task.candidates[:4])[0]
    np.testing.assert_allclose(out["score"].iloc[:4], direct, rtol=1e-4, atol=1e-7)
    cats = [k.split(":", 1)[1] for k in task.train.item_ids if k.startswith("category:")][:2]
    walk_in = pd.DataFrame(
        {"member_id": ["walk-in"] * 2, "offer_id": offers[:2], "basket": ["|".join(cats)] * 2}
    )
    assert (model.predict(None, walk_in)["fallback"] == "personalised").all()


def test_sample_configs_is_seeded_and_starts_with_the_default():
    a = sample_configs(ALS_SPACE, 5, seed=1, default=ALS_DEFAULT)
    assert a == sample_configs(ALS_SPACE, 5, seed=1, default=ALS_DEFAULT)
    assert a[0] == ALS_DEFAULT and len({json.dumps(c, sort_keys=True) for c in a}) == 5


def test_cli_json_has_the_issue_shape(program, tmp_path):
    data = tmp_path / "sim"
    program.write(data)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    cmd_affinity.register(app)
    args = ["evaluate", "affinity", "--data", str(data), "--json", "--candidates", "all"]
    result = CliRunner().invoke(app, [*args, "--als-trials", "1", "--bpr-trials", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"dataset", "split", "shipped", "models"} <= set(report)
    assert report["dataset"] == "sim"
    assert {"als", "bpr", "popularity", "segment_popularity", "personal_popularity"} <= set(
        report["models"]
    )
    assert "recall@10" in report["models"]["als"] and "ndcg@10" in report["models"]["als"]


def test_cli_names_a_bad_option(tmp_path):
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    cmd_affinity.register(app)
    result = CliRunner().invoke(
        app, ["evaluate", "affinity", "--data", str(tmp_path), "--target", "wine"]
    )
    assert result.exit_code != 0 and "target" in result.output


def test_blend_search_respects_the_als_weight_floor(tables):
    """With ``min_als_weight`` the shipped blend always keeps ALS (checkout folds the basket
    into the ALS factors); the floor is validated."""
    floor = SearchSettings(
        als_trials=1, bpr_trials=1, bpr_fixed={"factors": 8, "iterations": 20}, min_als_weight=0.5
    )
    run = run_evaluation(tables, EvalSettings(candidates="all"), floor, "sim-600-floor")
    assert run.search.blend["als_weight"] >= 0.5
    blend_trials = [t for t in run.search.trials if t["model"] == "blend"]
    assert blend_trials and all(t["params"]["als_weight"] >= 0.5 for t in blend_trials)
    with pytest.raises(ValueError, match="min_als_weight"):
        SearchSettings(min_als_weight=9.0)
