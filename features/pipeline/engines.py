"""Backends the feature pipeline runs on: embedded DuckDB (default) or a Spark session."""

from __future__ import annotations

import logging
import re
import tempfile
from typing import Any

import ibis
from ibis.backends import BaseBackend

from features.pipeline.tables import FeatureInputError

__all__ = [
    "ENGINES",
    "check_memory_limit",
    "connect",
    "max_result_size",
    "spark_memory",
    "spark_session",
]

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "spark")

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def check_memory_limit(value: str) -> int:
    """The bytes of a memory limit such as ``"4GB"``, ``"512MB"`` or ``"1.5GiB"`` (a number and
    one of the units DuckDB reads: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; at least 1 MB).
    Raises :class:`FeatureInputError` naming the value otherwise."""
    m = _SIZE.match(str(value))
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise FeatureInputError(
            f"memory limit {value!r} is not a size such as 4GB or 512MB (a number and one of "
            "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    size = int(float(m.group(1)) * _UNITS[unit])
    if size < 10**6:
        raise FeatureInputError(f"memory limit {value!r} is below 1MB")
    return size


def spark_memory(value: str) -> str:
    """A memory limit (:func:`check_memory_limit`) as a Spark memory setting, in MiB."""
    return f"{max(1, check_memory_limit(value) // 2**20)}m"


def max_result_size(driver_memory: str) -> str:
    """``spark.driver.maxResultSize`` for a driver of ``driver_memory`` (Spark's form, e.g.
    ``"3814m"`` or ``"2g"``): half of it, at least Spark's default 1g. Every input the models
    are fitted from comes back to the driver (the uplift training set of 1M members is 1.09
    GiB serialized, over the 1g default: the query failed), so the cap follows the memory the
    user gives the driver instead of a fixed 1g."""
    m = re.match(r"^\s*(\d+)\s*([kmgt]?)b?\s*$", driver_memory, re.IGNORECASE)
    if m is None:
        raise FeatureInputError(f"driver memory {driver_memory!r} is not a Spark size (3814m, 2g)")
    scale = {"": 1 / 2**20, "k": 1 / 2**10, "m": 1, "g": 2**10, "t": 2**20}[m.group(2).lower()]
    return f"{max(1024, int(int(m.group(1)) * scale) // 2)}m"


def spark_session(
    master: str | None = None, shuffle_partitions: int = 8, driver_memory: str = "2g"
) -> Any:
    """A Spark session configured for the pipeline: session time zone UTC (timestamps are
        naive UTC), small shuffle partition count, no UI, a throw-away warehouse directory (nothing
        is written next to the caller). ``master`` defaults to ``$SPARK_MASTER`` or ``local[*]``;
        an existing session is reused (then ``driver_memory`` cannot change). Results may be up to
    half the driver's memory (:func:`max_result_size`)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # the `spark` extra is not installed
        raise FeatureInputError("engine 'spark' needs pyspark (pip install '.[spark]')") from exc
    if master is None:
        from features.settings import FeaturesSettings

        master = FeaturesSettings().spark_master
    spark = (
        SparkSession.builder.master(master)
        .appName("loyalty-offers-features")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.maxResultSize", max_result_size(driver_memory))
        .config("spark.sql.warehouse.dir", tempfile.mkdtemp(prefix="offers-spark-warehouse-"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    tz = spark.conf.get("spark.sql.session.timeZone")
    if tz != "UTC":
        raise FeatureInputError(f"spark.sql.session.timeZone is {tz!r}; the pipeline needs UTC")
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def connect(engine: str = "duckdb", memory_limit: str | None = None, **kwargs: Any) -> BaseBackend:
    """An Ibis backend for ``engine`` (``duckdb``: in-memory, optionally with a memory limit
    such as ``"4GB"`` past which it spills to a temporary directory; ``spark``: a local
    session, or the session passed as ``session=``)."""
    if engine == "duckdb":
        if memory_limit is not None:
            check_memory_limit(memory_limit)
        con = ibis.duckdb.connect(**kwargs)
        if memory_limit is not None:
            con.raw_sql(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
            # Spill to the system temp directory, not to ./.tmp next to the caller.
            spill = tempfile.mkdtemp(prefix="offers-duckdb-spill-")
            con.raw_sql(f"SET temp_directory = '{spill}'")
        return con
    if engine == "spark":
        session = kwargs.pop("session", None) or spark_session(**kwargs)
        return ibis.pyspark.connect(session)
    raise FeatureInputError(f"engine: {engine!r} is not one of {ENGINES}")
