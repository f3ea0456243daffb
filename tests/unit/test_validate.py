"""Validation of data directories: every class of problem, with file, column, value and rows."""

from __future__ import annotations

import pandas as pd
import pytest

from features.sources.io import write_table
from features.sources.validate import DataValidationError, load_dir, validate_dir
from tests.support.tables import NOW, good_tables, write_csv


def _problems(result, kind):
    return [p for p in result.problems if p.kind == kind]


def test_good_directory_is_ok_and_typed(tmp_path):
    res = validate_dir(write_csv(tmp_path, good_tables()), now=NOW)
    assert res.ok, res.summary()
    assert res.problems == []
    m = res.tables["members"]
    assert str(m["joined_at"].dtype) == "datetime64[us]"
    assert m["points_balance"].tolist() == [120.0, 0.0, 40.5]
    assert m["email_opt_in"].tolist() == [True, False, True]
    # absent nullable columns are filled with nulls, in canonical order
    assert list(m.columns)[:3] == ["member_id", "joined_at", "birth_date"]
    assert m["birth_date"].isna().all()
    # identical basket lines are legitimate and kept
    assert res.counts["transactions"].kept == 4


def test_parquet_roundtrip_is_ok(tmp_path):
    res = validate_dir(write_csv(tmp_path / "csv", good_tables()), now=NOW)
    for name, df in res.tables.items():
        write_table(df, tmp_path / "pq", name)
    res2 = validate_dir(tmp_path / "pq", now=NOW)
    assert res2.ok and res2.problems == []
    for name in res.tables:
        pd.testing.assert_frame_equal(res.tables[name], res2.tables[name])


def test_missing_file_and_columns(tmp_path):
    t = good_tables()
    del t["offers"]
    t["members"] = t["members"].drop(columns=["joined_at"]).assign(shoe_size="42")
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    assert not res.ok
    (missing_file,) = _problems(res, "missing_file")
    assert missing_file.table == "offers"
    (mc,) = _problems(res, "missing_column")
    assert (mc.file, mc.column) == ("members.csv", "joined_at")
    (ec,) = _problems(res, "extra_column")
    assert (ec.file, ec.column) == ("members.csv", "shoe_size")


def test_wrong_types_name_file_column_value_and_rows(tmp_path):
    t = good_tables()
    t["transactions"].loc[2, "amount"] = "twelve"
    t["members"].loc[1, "joined_at"] = "not-a-date"
    t["members"].loc[0, "email_opt_in"] = "maybe"
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    wrong = {(p.file, p.column): p for p in _problems(res, "wrong_type")}
    amount = wrong[("transactions.csv", "amount")]
    assert amount.values == ["twelve"] and amount.rows == [3]
    assert "transactions.csv column 'amount'" in amount.message and "'twelve'" in amount.message
    assert wrong[("members.csv", "joined_at")].rows == [2]
    assert wrong[("members.csv", "email_opt_in")].values == ["maybe"]
    assert res.counts["transactions"].rejected >= 1


def test_duplicate_ids_rejected_exact_duplicates_fixed(tmp_path):
    t = good_tables()
    ev = t["offer_events"]
    t["offer_events"] = pd.concat([ev, ev.iloc[[1]]], ignore_index=True)  # exact copy of e2
    m = t["members"]
    clash = m.iloc[[0]].assign(tier="bronze")  # same id, different contents
    t["members"] = pd.concat([m, clash], ignore_index=True)
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    (fixed,) = _problems(res, "exact_duplicate")
    assert fixed.file == "offer_events.csv" and fixed.rows == [5] and fixed.action == "fixed"
    assert res.counts["offer_events"].fixed == 1
    assert res.counts["offer_events"].kept == 4
    (dup,) = _problems(res, "duplicate_id")
    assert (dup.column, dup.values, dup.rows) == ("member_id", ["m1"], [4])
    assert res.counts["members"].rejected == 1
    assert not res.ok


def test_unknown_references(tmp_path):
    t = good_tables()
    t["offer_events"].loc[0, "offer_id"] = "o-missing"
    t["transactions"].loc[3, "member_id"] = "ghost"
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    refs = {(p.file, p.column): p for p in _problems(res, "unknown_reference")}
    assert refs[("offer_events.csv", "offer_id")].values == ["o-missing"]
    assert refs[("offer_events.csv", "offer_id")].rows == [1]
    assert refs[("transactions.csv", "member_id")].values == ["ghost"]
    assert refs[("transactions.csv", "member_id")].rows == [4]
    assert res.counts["transactions"].kept == 3


def test_future_and_unparseable_timestamps(tmp_path):
    t = good_tables()
    t["transactions"].loc[0, "ts"] = "2027-05-01 00:00:00"
    t["offer_events"].loc[3, "ts"] = "31/31/2026"
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    (fut,) = _problems(res, "future_timestamp")
    assert (fut.file, fut.column, fut.rows) == ("transactions.csv", "ts", [1])
    assert fut.values == ["2027-05-01 00:00:00"]
    (bad,) = _problems(res, "wrong_type")
    assert (bad.file, bad.column, bad.rows, bad.values) == (
        "offer_events.csv",
        "ts",
        [4],
        ["31/31/2026"],
    )


def test_negative_amounts_and_allowed_values_and_bounds(tmp_path):
    t = good_tables()
    t["transactions"].loc[1, "amount"] = "-3.5"
    t["offers"].loc[1, "kind"] = "discount"
    t["offer_events"].loc[0, "propensity"] = "1.5"
    t["offer_events"].loc[1, "event"] = "clicked"
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    (neg,) = _problems(res, "negative_value")
    assert (neg.file, neg.column, neg.values, neg.rows) == (
        "transactions.csv",
        "amount",
        ["-3.5"],
        [2],
    )
    allowed = {(p.file, p.column): p for p in _problems(res, "not_allowed")}
    assert allowed[("offers.csv", "kind")].values == ["discount"]
    assert "discount_pct" in allowed[("offers.csv", "kind")].message
    assert allowed[("offer_events.csv", "event")].values == ["clicked"]
    (rng,) = _problems(res, "out_of_range")
    assert (rng.column, rng.values) == ("propensity", ["1.5"])


def test_offer_id_null_only_for_held_out(tmp_path):
    t = good_tables()
    t["offer_events"].loc[0, "offer_id"] = None
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    (p,) = _problems(res, "missing_offer")
    assert p.rows == [1] and p.column == "offer_id"


def test_timezone_aware_timestamps_are_converted(tmp_path):
    t = good_tables()
    t["transactions"].loc[0, "ts"] = "2026-01-02T10:00:00+01:00"
    res = validate_dir(write_csv(tmp_path, t), now=NOW)
    assert res.ok
    (fix,) = _problems(res, "timezone_converted")
    assert fix.rows == [1] and res.counts["transactions"].fixed == 1
    assert res.tables["transactions"]["ts"].iloc[0] == pd.Timestamp("2026-01-02 09:00:00")


def test_load_dir_raises_with_every_problem(tmp_path):
    t = good_tables()
    t["transactions"].loc[1, "amount"] = "-1"
    t["members"].loc[2, "joined_at"] = "yesterday-ish"
    with pytest.raises(DataValidationError) as err:
        load_dir(write_csv(tmp_path, t), now=NOW)
    text = str(err.value)
    assert "transactions.csv column 'amount'" in text and "'-1'" in text
    assert "members.csv column 'joined_at'" in text


def test_missing_directory(tmp_path):
    res = validate_dir(tmp_path / "nope")
    assert not res.ok and res.problems[0].kind == "missing_file"
