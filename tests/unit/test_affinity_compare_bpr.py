"""``compare_bpr`` (auto | on | off): BPR is a comparison in the report, never shipped. Without
it the shipped blend, every other model's metrics, the chosen parameters and the calibration
are the same; the setting and the decision are in the report and the run's parameters; bad
values name the option."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from features.sim.simulate import simulate
from training.affinity.evaluate import EvalSettings
from training.affinity.report import MODEL_ORDER, run_evaluation
from training.affinity.search import SearchSettings, bpr_compared
from training.affinity.train import _flat_params, _logged_metrics

BPR_FAST = {"factors": 8, "iterations": 20}


def _settings(compare_bpr: str, **kw: object) -> SearchSettings:
    return SearchSettings(
        als_trials=2, bpr_trials=1, bpr_fixed=BPR_FAST, compare_bpr=compare_bpr, **kw
    )


@pytest.fixture(scope="module")
def tables():
    program = simulate(600, seed=5)
    return {t: getattr(program, t) for t in ("members", "offers", "transactions", "offer_events")}


@pytest.fixture(scope="module")
def runs(tables):
    ev = EvalSettings(candidates="all")
    return {c: run_evaluation(tables, ev, _settings(c), f"sim-600-{c}") for c in ("on", "off")}


def test_auto_compares_bpr_up_to_the_member_count() -> None:
    auto = SearchSettings()
    assert auto.compare_bpr == "auto" and auto.bpr_auto_max_members == 200_000
    assert bpr_compared(auto, 200_000) and not bpr_compared(auto, 200_001)
    assert bpr_compared(SearchSettings(compare_bpr="on"), 10**7)
    assert not bpr_compared(SearchSettings(compare_bpr="off"), 10)
    with pytest.raises(ValueError, match="compare_bpr"):
        SearchSettings(compare_bpr="sometimes")  # type: ignore[arg-type]


def test_off_leaves_the_shipped_model_and_every_other_figure_unchanged(runs) -> None:
    on, off = runs["on"].report, runs["off"].report
    assert "bpr" in on["models"] and "bpr" in on["validation"] and on["params"]["bpr"]
    assert "bpr" not in off["models"] and "bpr" not in off["validation"]
    assert off["params"]["bpr"] is None and "bpr" not in runs["off"].models
    assert not any(t["model"] == "bpr" for t in runs["off"].search.trials)
    others = [m for m in MODEL_ORDER if m != "bpr"]
    assert list(off["models"]) == others
    for name in others:  # identical, not close: BPR shares nothing with the other fits
        assert off["models"][name] == on["models"][name], name
        assert off["validation"][name] == on["validation"][name], name
    for key in ("als", "blend", "interactions", "search"):
        assert off["params"][key] == on["params"][key], key
    assert off["ratios"] == on["ratios"]
    assert off["calibration"] == on["calibration"]
    als_on, als_off = runs["on"].models["als"], runs["off"].models["als"]
    assert (als_off.item_factors_ == als_on.item_factors_).all()  # type: ignore[attr-defined]
    assert (als_off.user_factors_ == als_on.user_factors_).all()  # type: ignore[attr-defined]


def test_the_setting_and_the_decision_are_run_parameters(runs, tables) -> None:
    off = runs["off"].report
    assert off["params"]["compare_bpr"] == {
        "setting": "off",
        "auto_max_members": 200_000,
        "members": off["split"]["test"]["train_members"],
        "compared": False,
    }
    params = _flat_params(off, EvalSettings(candidates="all"))
    assert params["compare_bpr.setting"] == "off" and params["compare_bpr.compared"] is False
    assert not any(k.startswith("bpr.") for k in params)
    assert not any(k.startswith("bpr.") for k in _logged_metrics(off))
    on = _flat_params(runs["on"].report, EvalSettings(candidates="all"))
    assert on["compare_bpr.compared"] is True and on["bpr.factors"] == 8
    assert "bpr.ndcg@10" in _logged_metrics(runs["on"].report)
    # auto decides on the members the final models are fitted on
    members = off["split"]["test"]["train_members"]
    small = _settings("auto", bpr_auto_max_members=members - 1)
    auto = run_evaluation(tables, EvalSettings(candidates="all"), small, "sim-600-auto").report
    assert auto["params"]["compare_bpr"]["compared"] is False and "bpr" not in auto["models"]
    assert auto["models"]["blend"] == off["models"]["blend"]


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("cmd_affinity", ["train", "affinity"]),
        ("cmd_affinity", ["evaluate", "affinity"]),
        ("cmd_retrain", ["retrain"]),
    ],
)
def test_cli_names_a_bad_value(module: str, args: list[str], tmp_path: Path) -> None:
    import importlib

    app = typer.Typer()
    app.callback()(lambda: None)
    importlib.import_module(f"offers.{module}").register(app)
    res = CliRunner().invoke(app, [*args, "--data", str(tmp_path), "--compare-bpr", "maybe"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.replace("│", " ").split())
    assert "Invalid value for '--compare-bpr'" in text, text
    assert "'maybe' is not one of 'auto', 'on', 'off'" in text, text


@pytest.mark.parametrize(
    ("module", "args", "settings_module"),
    [
        ("cmd_affinity", ["evaluate", "affinity"], "training.affinity.search"),
        ("cmd_retrain", ["retrain"], "training.affinity.search"),
    ],
)
@pytest.mark.parametrize("value", ["auto", "on", "off"])
def test_cli_passes_each_value_as_the_setting(
    module: str,
    args: list[str],
    settings_module: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shared ``--compare-bpr`` option (``offers.cli.CompareBprOpt``) reaches
    ``SearchSettings.compare_bpr`` as the plain string on both commands."""
    import importlib

    import training.affinity.search as search

    seen: list[str] = []
    real = search.SearchSettings

    def spy(**kw: object) -> SearchSettings:
        seen.append(kw["compare_bpr"])  # type: ignore[arg-type]
        raise typer.Exit(code=7)  # stop after the settings

    monkeypatch.setattr(search, "SearchSettings", spy)
    app = typer.Typer()
    app.callback()(lambda: None)
    importlib.import_module(f"offers.{module}").register(app)
    res = CliRunner().invoke(app, [*args, "--data", str(tmp_path), "--compare-bpr", value])
    assert res.exit_code == 7, res.output
    assert seen == [value] and type(seen[0]) is str
    assert real(compare_bpr=seen[0]).compare_bpr == value
