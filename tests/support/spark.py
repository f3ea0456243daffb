"""One local Spark session per test run (starting one takes ~15 s).

The ``spark_session`` and ``spark_con`` fixtures (tests/integration/conftest.py) use these
helpers. Tests using them skip only when no Java runtime is installed; with Java present a
failure to start Spark is an error, not a skip.
"""

from __future__ import annotations

import os
import shutil
import warnings


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
