"""One local Spark session per test run (starting one takes ~15 s).

Import the fixtures into a test module (``from tests.integration.spark_fixtures import
spark_session, spark_con  # noqa: F401``). Tests using them skip only when no Java runtime is
installed; with Java present a failure to start Spark is an error, not a skip.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator

import pytest


def java_available() -> bool:
    """A ``java`` executable on PATH or under JAVA_HOME."""
    home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(
        home and os.path.exists(os.path.join(home, "bin", "java"))
    )


def make_spark_session():  # -> pyspark.sql.SparkSession
    """The pipeline's own session settings (UTC, no UI) on 2 cores with 4 shuffle partitions."""
    from features.pipeline.engines import spark_session

    warnings.filterwarnings("ignore", category=FutureWarning, module="pyspark")
    return spark_session(master="local[2]", shuffle_partitions=4)


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
