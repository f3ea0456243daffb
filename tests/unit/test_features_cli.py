"""``offers features``: files written, summary shown, config stored, errors named."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.sources.io import write_table
from offers import cmd_features
from tests.support import features as F


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    cmd_features.register(app)

    @app.command("noop")  # a second command keeps typer in multi-command mode
    def _noop() -> None:
        pass

    return app


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    for name, df in F.frames().items():
        write_table(df, d, name)
    return d


class _Result:
    def __init__(self, res) -> None:
        self.exit_code = res.exit_code
        # rich wraps long lines and draws boxes: compare on words only
        self.output = " ".join(re.sub("[\u2500-\u257f]", " ", res.output).split())


def _run(app, *args: str) -> _Result:
    return _Result(CliRunner().invoke(app, ["features", *args], catch_exceptions=False))


def test_writes_parquet_with_summary_and_config(app, data_dir, tmp_path):
    out = tmp_path / "f.parquet"
    res = _run(app, "--data", str(data_dir), "--as-of", "2024-06-12 12:00", "--out", str(out))
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert sorted(df["member_id"]) == ["m1", "m2", "m3", "m6"]
    assert "4 rows" in res.output and "days_to_birthday" in res.output
    # Nulls per feature: days_to_birthday is null for m3 and m6 (2 of 4 = 50%).
    line = next(ln for ln in res.output.splitlines() if "days_to_birthday" in ln)
    assert "2" in line and "50.0" in line
    config = json.loads((tmp_path / "f.parquet.config.json").read_text())
    assert config["categories"] == ["beauty", "electronics", "grocery", "home", "toys"]


def test_writes_csv_by_suffix_and_reads_a_config(app, data_dir, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("categories: [grocery]\nlapsing_days: 10\nlapsed_days: 20\n")
    out = tmp_path / "f.csv"
    res = _run(
        app,
        "--data",
        str(data_dir),
        "--as-of",
        "2024-06-12 12:00",
        "--out",
        str(out),
        "--config",
        str(cfg),
        "--memory-limit",
        "1GB",
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out).set_index("member_id")
    assert list(df.filter(like="share_").columns) == ["share_grocery", "share_other"]
    assert df.loc["m6", "lifecycle_stage"] == "lapsed"  # 60 days > 20


def test_pairs_give_each_row_its_own_time(app, data_dir, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame(
        {"member_id": ["m1", "m1"], "decision_time": ["2024-01-01", "2024-06-12 12:00"]}
    ).to_csv(pairs, index=False)
    out = tmp_path / "p.parquet"
    res = _run(
        app,
        "--data",
        str(data_dir),
        "--pairs",
        str(pairs),
        "--out",
        str(out),
        "--history-start",
        "auto",
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out).sort_values("decision_time")
    assert df["n_purchases_total"].tolist() == [2, 7]
    config = json.loads((tmp_path / "p.parquet.config.json").read_text())
    assert config["history_start"].startswith("2023-03-01T12:00")  # earliest transaction


def test_errors_are_named(app, data_dir, tmp_path):
    res = _run(
        app, "--data", str(data_dir), "--as-of", "2024-06-12", "--out", str(tmp_path / "f.txt")
    )
    assert res.exit_code == 2 and "suffix must be .parquet or .csv" in res.output
    res = _run(
        app,
        "--data",
        str(tmp_path / "nowhere"),
        "--as-of",
        "2024-06-12",
        "--out",
        str(tmp_path / "f.parquet"),
    )
    assert res.exit_code == 2 and "no 'members' table" in res.output
    res = _run(app, "--data", str(data_dir), "--out", str(tmp_path / "f.parquet"))
    assert res.exit_code != 0 and "exactly one of --as-of and --pairs" in res.output
    res = _run(app, "--data", str(data_dir), "--as-of", "2024-06-12", "--engine", "oracle")
    assert res.exit_code == 2 and "'oracle' is not one of" in res.output


def test_count_features_are_integers_in_the_file(app, data_dir, tmp_path):
    """DuckDB's SUM of integers is a HUGEINT, which its Parquet writer stored as DOUBLE: the 37
    count features (n_purchases_30d, offers_received, ...) were doubles in the DuckDB file
    while the summary said int64 and Spark's file had int64. Every column the summary calls an
    integer is one in the file, and the CSV prints counts without a decimal point."""
    import pyarrow.parquet as pq

    out = tmp_path / "f.parquet"
    res = _run(app, "--data", str(data_dir), "--as-of", "2024-06-12 12:00", "--out", str(out))
    assert res.exit_code == 0, res.output
    schema = pq.read_schema(out)
    for name in ("n_purchases_30d", "n_purchases_365d", "offers_received", "offers_redeemed"):
        assert str(schema.field(name).type) == "int64", (name, schema.field(name).type)
    ints = [f.name for f in schema if str(f.type).startswith("int")]
    assert len(ints) >= 40  # counts, tenure, ranks: not only the four above
    csv = tmp_path / "f.csv"
    res = _run(app, "--data", str(data_dir), "--as-of", "2024-06-12 12:00", "--out", str(csv))
    assert res.exit_code == 0, res.output
    text = pd.read_csv(csv, dtype=str)
    assert not text["n_purchases_365d"].str.contains(r"\.").any(), text["n_purchases_365d"]
    assert text["n_purchases_365d"].astype(int).gt(0).any()
