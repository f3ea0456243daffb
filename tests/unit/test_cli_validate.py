"""``offers validate`` exits non-zero on a broken directory and names file, column, value, rows."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from offers.cli import _register_all, app
from tests.support.tables import good_tables, write_csv

_register_all()
runner = CliRunner()


def test_validate_ok_directory_exits_zero(tmp_path):
    d = write_csv(tmp_path, good_tables())
    res = runner.invoke(app, ["validate", str(d), "--now", "2026-11-01"])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output


def test_validate_broken_file_exits_non_zero_and_names_everything(tmp_path):
    t = good_tables()
    t["transactions"].loc[2, "amount"] = "-12"
    d = write_csv(tmp_path, t)
    res = runner.invoke(app, ["validate", str(d), "--now", "2026-11-01", "--json"])
    assert res.exit_code == 1
    report = json.loads(res.output)
    (p,) = report["problems"]
    assert (p["file"], p["column"], p["values"], p["rows"]) == (
        "transactions.csv",
        "amount",
        ["-12"],
        [3],
    )
    assert report["counts"]["transactions"] == {"read": 4, "fixed": 0, "rejected": 1, "kept": 3}
