"""``--memory-limit`` (features, train/evaluate affinity and uplift, retrain): a size DuckDB
reads, or a clear error naming the option and the value before any data is opened."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from features.pipeline import FeatureInputError
from features.pipeline.engines import check_memory_limit, connect, spark_memory


@pytest.mark.parametrize(
    ("value", "size"),
    [("4GB", 4 * 10**9), ("512mb", 512 * 10**6), ("1.5GiB", 3 * 2**29), (" 2 GB ", 2 * 10**9)],
)
def test_sizes_duckdb_reads_are_accepted(value: str, size: int) -> None:
    assert check_memory_limit(value) == size


@pytest.mark.parametrize("value", ["lots", "4", "4 gigs", "-1GB", "GB", "4GB;drop", ""])
def test_other_values_are_rejected_naming_the_value(value: str) -> None:
    with pytest.raises(FeatureInputError, match=re.escape(f"memory limit {value!r} is not a size")):
        check_memory_limit(value)


def test_below_one_megabyte_is_rejected() -> None:
    with pytest.raises(FeatureInputError, match="'10KB' is below 1MB"):
        check_memory_limit("10KB")


def test_duckdb_gets_the_limit_and_spark_the_same_size() -> None:
    con = connect("duckdb", memory_limit="1.5GiB")
    limit = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.replace(" ", "") in {"1.5GiB", "1.4GiB"}  # DuckDB prints binary units
    with pytest.raises(FeatureInputError, match="'x' is not a size"):
        connect("duckdb", memory_limit="x")
    assert spark_memory("4GB") == "3814m" and spark_memory("2GiB") == "2048m"


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("cmd_affinity", ["train", "affinity"]),
        ("cmd_affinity", ["evaluate", "affinity"]),
        ("cmd_uplift", ["train", "uplift"]),
        ("cmd_uplift", ["evaluate", "uplift"]),
        ("cmd_features", ["features", "--as-of", "2026-01-01"]),
        ("cmd_retrain", ["retrain"]),
    ],
)
def test_cli_names_the_option_and_the_value(module: str, args: list[str], tmp_path: Path) -> None:
    import importlib

    app = typer.Typer()
    app.callback()(lambda: None)
    importlib.import_module(f"offers.{module}").register(app)
    res = CliRunner().invoke(app, [*args, "--data", str(tmp_path), "--memory-limit", "4 gigs"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.replace("│", " ").split())  # rich's box, wrapped lines
    assert "--memory-limit" in text and "'4 gigs' is not a size such as 4GB" in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--engine", "spark", "--memory-limit", "4GB"], {"driver_memory": "3814m"}),
        (["--engine", "spark"], {}),
        (["--engine", "duckdb", "--memory-limit", "4GB"], {"memory_limit": "4GB"}),
    ],
)
def test_features_on_spark_gets_the_limit_as_driver_memory(
    argv: list[str], expected: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``offers features --engine spark --memory-limit`` sizes the driver, as ``train`` does
    (before, the limit was dropped on Spark and the driver kept its 2g default)."""
    from offers import cmd_features

    seen: list[tuple[str, dict[str, str]]] = []

    def fake_connect(engine: str, **kwargs: str) -> None:
        seen.append((engine, kwargs))
        raise FeatureInputError("stop after connect")

    monkeypatch.setattr(cmd_features, "connect", fake_connect)
    app = typer.Typer()
    app.callback()(lambda: None)
    cmd_features.register(app)
    args = ["features", "--data", str(tmp_path), "--as-of", "2026-01-01", *argv]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "stop after connect" in res.output, res.output
    assert seen == [(argv[1], expected)]


def test_spark_results_may_take_half_the_driver() -> None:
    """``spark.driver.maxResultSize`` follows the driver's memory: the 1M uplift training set
    is 1.09 GiB serialized and failed under Spark's fixed 1g default."""
    from features.pipeline.engines import max_result_size

    assert max_result_size(spark_memory("4GB")) == "1907m"  # 3814m driver
    assert max_result_size("8g") == "4096m" and max_result_size("8G") == "4096m"
    assert max_result_size("2g") == "1024m"  # the default driver keeps Spark's default
    assert max_result_size("512m") == "1024m"  # never below Spark's default
    with pytest.raises(FeatureInputError, match="'lots' is not a Spark size"):
        max_result_size("lots")
