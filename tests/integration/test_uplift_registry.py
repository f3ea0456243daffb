"""``offers train uplift`` against an MLflow registry (a SQLite store in a temporary folder).

A small simulated program is trained on, logged and registered as ``offers-uplift``: the first
version becomes champion; a deliberately worse model (training treatments shuffled: a placebo)
stays challenger; the champion loads with ``mlflow.pyfunc.load_model`` (no training code) and
predicts what the native learners predict; a run on another test window re-scores the champion.
The last test does one registration and load through a real ``mlflow server`` process.
"""

from __future__ import annotations

import json
import os

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from features.sim.simulate import SimConfig, simulate
from training.registry import CHALLENGER, CHAMPION, ModelRegistry
from training.uplift.data import TREATMENT, UpliftTrainingSet, build_training_set, time_split
from training.uplift.train import UPLIFT_MODEL, UpliftTrainSettings, train_uplift

pytestmark = pytest.mark.slow

FAST = {"n_estimators": 50, "learning_rate": 0.1, "min_child_samples": 200}
SETTINGS = UpliftTrainSettings(base_params=FAST)


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("uplift-sim") / "sim"
    simulate(10_000, seed=12, config=SimConfig(campaign_share=1.0)).write(out)
    return out


@pytest.fixture(scope="module")
def training_set(program_dir) -> UpliftTrainingSet:
    return build_training_set(program_dir)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> ModelRegistry:
    home = tmp_path_factory.mktemp("uplift-home")
    return ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home)


@pytest.fixture(scope="module")
def first(program_dir, training_set, registry):
    return train_uplift(program_dir, SETTINGS, registry, training_set=training_set)


def _placebo(data: UpliftTrainingSet, seed: int = 0) -> UpliftTrainingSet:
    """The same rows with the treatments of the training rows shuffled (test rows untouched)."""
    train, _, _ = time_split(data, SETTINGS.test_share)
    frame = data.frame.copy()
    labels = frame[TREATMENT].to_numpy(dtype=object)
    labels[train] = np.random.default_rng(seed).permutation(labels[train])
    frame[TREATMENT] = labels
    return UpliftTrainingSet(
        frame, data.feature_columns, data.config, data.feature_config, data.data_end
    )


def test_first_version_is_logged_registered_and_champion(first, registry) -> None:
    assert first.version == "1" and first.decision.promoted
    assert registry.version_of(UPLIFT_MODEL, CHAMPION) == "1"
    metrics = registry.metrics(UPLIFT_MODEL, "1")
    assert metrics["qini"] == pytest.approx(first.metrics["qini"])
    assert metrics["truth_corr.conversion.all"] > 0.3  # the data dir holds truth/
    run = registry.client.get_run(registry._version(UPLIFT_MODEL, "1").run_id)
    params = run.data.params
    assert params["learner"] == "S" and params["treatment"] == "kind"
    assert params["train.outcomes_until"] <= params["test_start"]  # no peeking at the test
    assert run.data.tags["git_sha"]
    assert registry.test_window(UPLIFT_MODEL, "1") == first.test_window
    names = {a.path for a in registry.client.list_artifacts(run.info.run_id)}
    assert {"qini_conversion.png", "qini_spend.png", "test_split.parquet"} <= names


def test_a_worse_model_does_not_become_champion(first, program_dir, training_set, registry):
    placebo = train_uplift(program_dir, SETTINGS, registry, training_set=_placebo(training_set))
    assert placebo.test_window == first.test_window  # compared on the same stored test split
    assert placebo.metrics["qini"] < first.metrics["qini"]
    assert not placebo.decision.promoted
    assert "does not beat champion v1" in placebo.decision.reason
    assert registry.version_of(UPLIFT_MODEL, CHAMPION) == "1"
    assert registry.version_of(UPLIFT_MODEL, CHALLENGER) == placebo.version


def test_champion_loads_without_training_code_and_matches_native(first, registry) -> None:
    fitted = first.fitted
    test = fitted.data.frame[fitted.test].reset_index(drop=True)
    features = test[list(fitted.data.feature_columns)]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{UPLIFT_MODEL}@{CHAMPION}")
    finally:
        mlflow.set_tracking_uri(previous)
    served = model.predict(features)
    X = fitted.encoder.transform(features)
    for outcome, learner in fitted.learners.items():
        cols = [f"{outcome}:{t}" for t in fitted.treatments]
        native = learner.predict(X)
        assert np.abs(served[cols].to_numpy() - native).max() <= 1e-4
    # the logged signature takes the feature columns; the model module is models.uplift only
    assert set(model.metadata.get_input_schema().input_names()) == set(features.columns)


def test_cli_run_on_another_window_rescores_the_champion(first, program_dir, registry) -> None:
    import typer

    from offers import cmd_uplift

    app = typer.Typer()

    @app.callback()
    def _root() -> None: ...

    cmd_uplift.register(app)
    result = CliRunner().invoke(
        app,
        [
            "train",
            "uplift",
            "--data",
            str(program_dir),
            "--test-share",
            "0.1",
            "--base-params",
            json.dumps(FAST),
            "--outcomes",
            "conversion",
            "--treatment",
            "kind",  # the champion's grain: only the window differs
            "--tracking-uri",
            registry.tracking_uri,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "re-scored" in result.output, result.output
    versions = registry.versions(UPLIFT_MODEL)
    assert registry.test_window(UPLIFT_MODEL, versions[-1]) != first.test_window


@pytest.mark.integration
def test_register_and_load_through_a_real_mlflow_server(
    mlflow_server,
    program_dir,
    training_set,
    tmp_path,
) -> None:
    """One version through a real ``mlflow server`` process (tests/integration/conftest.py)."""
    registry = ModelRegistry(tracking_uri=mlflow_server, home=tmp_path)
    settings = UpliftTrainSettings(base_params=FAST, outcomes=("conversion",))
    result = train_uplift(program_dir, settings, registry, training_set=training_set)
    assert result.decision.promoted and registry.version_of(UPLIFT_MODEL, CHAMPION) == "1"
    fitted = result.fitted
    features = fitted.data.frame[fitted.test][list(fitted.data.feature_columns)].head(2_000)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{UPLIFT_MODEL}@{CHAMPION}")
    finally:
        mlflow.set_tracking_uri(previous)
    served = model.predict(features)
    native = fitted.learners["conversion"].predict(fitted.encoder.transform(features))
    cols = [f"conversion:{t}" for t in fitted.treatments]
    assert np.abs(served[cols].to_numpy() - native).max() <= 1e-4
