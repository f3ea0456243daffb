"""Fixtures for the integration tests: the shared Spark session, a real MLflow tracking server
per module, and the served program (``world``: a simulated program with both models registered
as champion in a local MLflow store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import build_program, train_affinity_quick, train_uplift_quick
from tests.support.registry import small_blend_artifacts
from tests.support.servers import MlflowServer
from tests.support.spark import java_available, make_spark_session


@pytest.fixture(scope="session")
def spark_session() -> Iterator[object]:
    """The shared local Spark session (stopped at the end of the run)."""
    if not java_available():
        pytest.skip("no Java runtime: Spark tests need Java 17")
    pytest.importorskip("pyspark")
    spark = make_spark_session()
    yield spark
    spark.stop()


@pytest.fixture(scope="session")
def spark_con(spark_session):
    """An Ibis PySpark backend on the shared session."""
    import ibis

    return ibis.pyspark.connect(spark_session)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real tracking server for the module; terminated at the end."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def registry_artifacts(tmp_path_factory: pytest.TempPathFactory):
    """A small fitted affinity blend's arrays and its interactions (registry tests)."""
    return small_blend_artifacts(tmp_path_factory.mktemp("arrays"))


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Program, snapshot and both models registered as champion in a local MLflow store."""
    from training.registry import ModelRegistry

    home = tmp_path_factory.mktemp("offers-home")
    program = build_program(home / "data")
    registry = ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", home=home)
    versions = {"affinity": train_affinity_quick(program, registry)}
    versions["uplift"] = train_uplift_quick(program, registry)
    return {"home": home, "program": program, "registry": registry, "versions": versions}
