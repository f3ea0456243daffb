"""Adapters on tiny hand-written sources: each quirk gives a known output and a report line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.sources import schema as S
from features.sources.adapters import (
    AdapterResult,
    SourceDataError,
    complete_journey,
    convert,
    hillstrom,
    starbucks,
    write,
)
from features.sources.adapters.common import REPORT_FILE
from features.sources.io import to_canonical_frame
from offers import cmd_import


def _line(result: AdapterResult, table: str, words: str) -> int:
    found = [ln for ln in result.report.lines if ln.table == table and words in ln.reason]
    assert len(found) == 1, [ln.text for ln in result.report.lines]
    return found[0].count


def _jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


# ---- Starbucks ----------------------------------------------------------------------------------
def _received(person: str, offer: str, time: int) -> dict[str, object]:
    return {"person": person, "event": "offer received", "value": {"offer id": offer}, "time": time}


def _completed(person: str, offer: str, time: int, reward: int) -> dict[str, object]:
    value = {"offer_id": offer, "reward": reward}
    return {"person": person, "event": "offer completed", "value": value, "time": time}


def _viewed(person: str, offer: str, time: int) -> dict[str, object]:
    return {"person": person, "event": "offer viewed", "value": {"offer id": offer}, "time": time}


def _tx(person: str, amount: float, time: int) -> dict[str, object]:
    return {"person": person, "event": "transaction", "value": {"amount": amount}, "time": time}


@pytest.fixture
def sbux_dir(tmp_path: Path) -> Path:
    def offer(i: str, kind: str, d: int, r: int, days: float, ch: list[str]) -> dict[str, object]:
        return {
            "reward": r,
            "channels": ch,
            "difficulty": d,
            "duration": days,
            "offer_type": kind,
            "id": i,
        }

    _jsonl(
        tmp_path / "portfolio.json",
        [
            offer("B1", "bogo", 5, 5, 7.0, ["web", "email", "mobile"]),
            offer("D1", "discount", 10, 2, 10.0, ["email", "social"]),
            offer("I1", "informational", 0, 0, 3.0, ["mobile"]),
            offer("X1", "mystery", 1, 1, 1.0, ["email"]),
        ],
    )
    _jsonl(
        tmp_path / "profile.json.gz",
        [
            {"gender": "F", "age": 40, "id": "m1", "became_member_on": "20170101", "income": 50000},
            {
                "gender": None,
                "age": 118,
                "id": "m2",
                "became_member_on": "20180726",
                "income": None,
            },
            {"gender": "M", "age": 30, "id": "m3", "became_member_on": "2018-01-01", "income": 1},
            {"gender": "O", "age": 50, "id": "m1", "became_member_on": "20170101", "income": 2},
        ],
    )
    _jsonl(
        tmp_path / "transcript.json.gz",
        [
            _received("m1", "B1", 0),  # 0
            _received("m1", "B1", 24),  # 1: a second copy of the same offer
            _viewed("m1", "B1", 30),  # 2
            _completed("m1", "B1", 48, 5),  # 3
            _completed("m1", "B1", 48, 5),  # 4: identical, backed by the second copy -> kept
            _received("m2", "D1", 0),  # 5
            _completed("m2", "D1", 12, 2),  # 6
            _completed("m2", "D1", 12, 2),  # 7: identical, only one copy held -> rejected
            _received("m2", "I1", 0),  # 8
            _completed("m2", "I1", 10, 0),  # 9: informational cannot complete -> rejected
            _tx("m1", 12.5, 5),  # 10
            _tx("m3", 3.0, 6),  # 11: m3 was rejected -> rejected
            _received("m9", "B1", 0),  # 12: unknown person
            _received("m1", "X1", 0),  # 13: offer rejected from the portfolio
            {"person": "m1", "event": "offer expired", "value": {}, "time": 1},  # 14
            _tx("m1", -1.0, 7),  # 15: negative amount
            _viewed("m1", "B1", 30),  # 16: identical view -> rejected
        ],
    )
    return tmp_path


def test_starbucks_offers(sbux_dir: Path) -> None:
    r = starbucks.convert(sbux_dir)
    offers = r.offers.set_index(S.OFFER_ID)
    assert list(offers.index) == ["B1", "D1", "I1"]
    assert offers[S.KIND].to_dict() == {"B1": "bogo", "D1": "credit", "I1": "informational"}
    assert offers[S.CHANNELS_COL].to_dict() == {
        "B1": "email|app|web",
        "D1": "email|social",
        "I1": "app",
    }
    assert offers.loc["D1", [S.MIN_SPEND, S.REWARD_VALUE, S.COST, S.DURATION_DAYS]].tolist() == [
        10.0,
        2.0,
        2.0,
        10.0,
    ]
    assert r.report.tables["offers"].rejected == 1
    assert _line(r, "offers", "offer_type other than") == 1


def test_starbucks_members(sbux_dir: Path) -> None:
    r = starbucks.convert(sbux_dir)
    m = r.members.set_index(S.MEMBER_ID)
    assert list(m.index) == ["m1", "m2"]
    assert m.loc["m1", S.JOINED_AT] == pd.Timestamp("2017-01-01")
    assert m.loc["m1", [S.AGE, S.GENDER, S.INCOME]].tolist() == [40.0, "F", 50000.0]
    assert pd.isna(m.loc["m2", S.AGE]) and pd.isna(m.loc["m2", S.GENDER])
    counts = r.report.tables["members"]
    assert (counts.read, counts.written, counts.fixed, counts.rejected) == (4, 2, 1, 2)
    assert _line(r, "members", "age 118") == 1
    assert _line(r, "members", "not a YYYYMMDD date") == 1
    assert _line(r, "members", "repeating an earlier `id`") == 1


def test_starbucks_events(sbux_dir: Path) -> None:
    r = starbucks.convert(sbux_dir)
    ev = r.offer_events.set_index(S.EVENT_ID)
    assert list(ev.index) == [f"t{i:06d}" for i in (0, 1, 2, 3, 4, 5, 6, 8)]
    assert ev[S.EVENT].tolist() == [
        "sent",
        "sent",
        "viewed",
        "redeemed",
        "redeemed",
        "sent",
        "redeemed",
        "sent",
    ]
    assert ev.loc["t000002", S.TS] == pd.Timestamp("2018-08-02 06:00")  # hour 30
    # viewed/redeemed belong to the campaign of the latest earlier receipt of that offer
    assert ev[S.CAMPAIGN_ID].tolist() == [
        "send-h000",
        "send-h024",
        "send-h024",
        "send-h024",
        "send-h024",
        "send-h000",
        "send-h000",
        "send-h000",
    ]
    counts = r.report.tables["offer_events"]
    assert (counts.read, counts.written, counts.rejected) == (14, 8, 6)
    assert _line(r, "offer_events", "exact duplicate 'offer completed' rows kept") == 1
    assert _line(r, "offer_events", "not backed by a further active receipt") == 2
    assert _line(r, "offer_events", "informational offers") == 1
    assert _line(r, "offer_events", "person is not a kept member") == 1
    assert _line(r, "offer_events", "not in the portfolio") == 1
    assert _line(r, "offer_events", "event is none of") == 1
    assert _line(r, "offer_events", "key `offer_id`") == 5


def test_starbucks_transactions(sbux_dir: Path) -> None:
    r = starbucks.convert(sbux_dir)
    tx = r.transactions
    assert tx[S.TRANSACTION_ID].tolist() == ["t000010"]
    assert tx[S.AMOUNT].tolist() == [12.5]
    assert tx[S.TS].tolist() == [pd.Timestamp("2018-08-01 05:00")]
    assert tx[S.SKU].isna().all() and tx[S.CATEGORY].isna().all()
    counts = r.report.tables["transactions"]
    assert (counts.read, counts.written, counts.rejected) == (3, 1, 2)


def test_starbucks_is_deterministic(sbux_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(starbucks.convert(sbux_dir), a)
    write(starbucks.convert(sbux_dir), b)
    for name in ("members", "offers", "transactions", "offer_events"):
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes()
    assert (a / REPORT_FILE).read_text() == (b / REPORT_FILE).read_text()


# ---- Hillstrom ----------------------------------------------------------------------------------
HILLSTROM_CSV = (
    "recency,history_segment,history,mens,womens,zip_code,newbie,channel,segment,visit,"
    "conversion,spend\n"
    """10,2) $100 - $200,142.44,1,0,Surburban,0,Phone,Womens E-Mail,0,0,0
6,3) $200 - $350,329.08,1,1,Rural,1,Web,No E-Mail,1,0,0
7,2) $100 - $200,180.65,0,1,Surburban,1,Web,Mens E-Mail,1,1,29.99
6,3) $200 - $350,329.08,1,1,Rural,1,Web,No E-Mail,1,0,0
1,"6) $750 - $1,000",800.0,1,0,Urban,0,Multichannel,Womens E-Mail,1,0,0
"""
)


@pytest.fixture
def hill_dir(tmp_path: Path) -> Path:
    (tmp_path / hillstrom.FILE).write_bytes(gzip.compress(HILLSTROM_CSV.encode()))
    return tmp_path


def test_hillstrom_members(hill_dir: Path) -> None:
    r = hillstrom.convert(hill_dir)
    m = r.members
    assert m[S.MEMBER_ID].tolist() == ["00000", "00001", "00002", "00003", "00004"]
    assert m[S.JOINED_AT].tolist() == [
        pd.Timestamp("2006-03-01"),
        pd.Timestamp("2007-03-01"),
        pd.Timestamp("2007-03-01"),
        pd.Timestamp("2007-03-01"),
        pd.Timestamp("2006-03-01"),
    ]
    assert m[S.REGION].tolist()[:2] == ["Surburban", "Rural"]
    assert m.loc[4, S.SEGMENT] == "6) $750 - $1,000"
    assert m[S.EMAIL_OPT_IN].all()


def test_hillstrom_events(hill_dir: Path) -> None:
    r = hillstrom.convert(hill_dir)
    ev = r.offer_events.set_index(S.EVENT_ID)
    assert list(ev.index) == [
        "00000-sent",
        "00001-held_out",
        "00002-sent",
        "00002-viewed",
        "00003-held_out",
        "00004-sent",
        "00004-viewed",
    ]
    assert ev.loc["00000-sent", S.OFFER_ID] == "womens_email"
    assert ev.loc["00002-sent", S.OFFER_ID] == "mens_email"
    assert pd.isna(ev.loc["00001-held_out", S.OFFER_ID])
    assign = ev[ev[S.EVENT] != "viewed"]
    assert (assign[S.PROPENSITY] == 1 / 3).all()
    assert (assign[S.TS] == hillstrom.SEND).all()
    assert ev.loc["00002-viewed", S.TS] == pd.Timestamp("2008-03-15")
    assert (ev[S.CAMPAIGN_ID] == hillstrom.CAMPAIGN).all()
    assert _line(r, "offer_events", "control customers who visited") == 2
    assert _line(r, "offer_events", "arm 'No E-Mail'") == 2
    assert r.offers[S.OFFER_ID].tolist() == ["mens_email", "womens_email"]
    assert (r.offers[S.KIND] == "informational").all()


def test_hillstrom_transactions(hill_dir: Path) -> None:
    r = hillstrom.convert(hill_dir)
    tx = r.transactions.set_index(S.TRANSACTION_ID)
    assert len(tx) == 6
    assert tx.loc["00002-conversion", [S.AMOUNT, S.TS]].tolist() == [
        29.99,
        pd.Timestamp("2008-03-15"),
    ]
    h = tx.loc["00000-history"]
    assert (h[S.AMOUNT], h[S.TS], h[S.CATEGORY], h[S.CHANNEL]) == (
        142.44,
        pd.Timestamp("2007-05-01"),
        "mens",
        "phone",
    )
    assert tx.loc["00001-history", S.CATEGORY] == "mens+womens"
    assert tx.loc["00004-history", [S.TS, S.CHANNEL]].tolist() == [
        pd.Timestamp("2008-02-01"),
        "multichannel",
    ]


def test_hillstrom_accepts_the_file_itself(hill_dir: Path) -> None:
    assert len(hillstrom.convert(hill_dir / hillstrom.FILE).members) == 5


def test_hillstrom_missing_column_is_named(tmp_path: Path) -> None:
    text = HILLSTROM_CSV.replace(",segment,", ",arm,")
    (tmp_path / hillstrom.FILE).write_bytes(gzip.compress(text.encode()))
    with pytest.raises(SourceDataError, match=r"\['segment'\] absent"):
        hillstrom.convert(tmp_path)


def test_missing_source_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceDataError, match=r"portfolio\.json: source file not found"):
        starbucks.convert(tmp_path)
    with pytest.raises(KeyError, match="unknown data set"):
        convert("nope", tmp_path)


# ---- The Complete Journey ---------------------------------------------------------------------
@pytest.fixture
def cj_dir(tmp_path: Path) -> Path:
    def save(name: str, df: pd.DataFrame) -> None:
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)

    day = pd.Timestamp
    save(
        "products",
        pd.DataFrame(
            {
                "product_id": [1, 2],
                "department": ["GROCERY", "DRUG GM"],
                "product_category": ["SOFT DRINKS", None],
            }
        ),
    )
    save(
        "transactions",
        pd.DataFrame(
            {
                "household_id": [10, 10, 10, 11, 11, 12],
                "store_id": [7, 7, 7, 8, 8, 9],
                "basket_id": [100, 100, 101, 102, 103, 104],
                "product_id": [1, 2, 3, 1, 1, 2],
                "quantity": [2, 1, 1, 0, 1, 1],
                "sales_value": [3.0, 1.0, 2.0, 0.0, -1.5, 4.0],
                "coupon_disc": [0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
                "transaction_timestamp": [
                    day("2017-01-05 10:00"),
                    day("2017-01-05 10:00"),
                    day("2017-02-01 09:00"),
                    day("2017-01-10 12:00"),
                    day("2017-01-11 12:00"),
                    day("2017-03-01 08:00"),
                ],
            }
        ),
    )
    save(
        "campaign_descriptions",
        pd.DataFrame(
            {
                "campaign_id": [1, 2],
                "campaign_type": ["Type A", "Type B"],
                "start_date": [day("2017-01-01"), day("2016-12-01")],
                "end_date": [day("2017-02-01"), day("2017-01-31")],
            }
        ),
    )
    save("campaigns", pd.DataFrame({"campaign_id": [1, 2, 2], "household_id": [10, 11, 12]}))
    save(
        "coupons",
        pd.DataFrame({"coupon_upc": [555, 666], "product_id": [1, 2], "campaign_id": [1, 2]}),
    )
    save(
        "coupon_redemptions",
        pd.DataFrame(
            {
                "household_id": [10],
                "coupon_upc": [555],
                "campaign_id": [1],
                "redemption_date": [day("2017-01-05")],
            }
        ),
    )
    save(
        "demographics",
        pd.DataFrame(
            {
                "household_id": [10, 99, 12],
                "age": ["45-54", "65+", "weird"],
                "income": ["50-74K", "250K+", "Under 15K"],
            }
        ),
    )
    return tmp_path


def test_complete_journey_transactions(cj_dir: Path) -> None:
    r = complete_journey.convert(cj_dir)
    tx = r.transactions
    assert tx[S.TRANSACTION_ID].tolist() == ["100", "100", "101", "102", "104"]
    assert tx[S.SKU].tolist() == ["1", "2", "3", "1", "2"]
    assert tx[S.STORE_ID].tolist() == ["7", "7", "7", "8", "9"]
    assert tx[S.CATEGORY].fillna("-").tolist() == ["SOFT DRINKS", "-", "-", "SOFT DRINKS", "-"]
    assert tx[S.QUANTITY].tolist() == [2.0, 1.0, 1.0, 0.0, 1.0]
    counts = r.report.tables["transactions"]
    assert (counts.read, counts.written, counts.rejected) == (6, 5, 1)
    assert _line(r, "transactions", "negative sales_value") == 1
    assert _line(r, "transactions", "quantity 0") == 1
    assert _line(r, "transactions", "has no row in") == 1
    assert _line(r, "transactions", "no product_category") == 2


def test_complete_journey_members(cj_dir: Path) -> None:
    r = complete_journey.convert(cj_dir)
    m = r.members.set_index(S.MEMBER_ID)
    assert list(m.index) == ["10", "11", "12"]
    # earliest activity: the campaign start precedes every household's first purchase here
    assert m[S.JOINED_AT].tolist() == [
        day for day in pd.to_datetime(["2017-01-01", "2016-12-01", "2016-12-01"])
    ]
    assert m.loc["10", [S.AGE, S.INCOME]].tolist() == [50.0, 62_500.0]
    assert pd.isna(m.loc["11", S.AGE]) and pd.isna(m.loc["12", S.AGE])
    assert m.loc["12", S.INCOME] == 7_500.0
    counts = r.report.tables["members"]
    assert (counts.read, counts.written, counts.fixed, counts.rejected) == (4, 3, 1, 1)
    assert _line(r, "members", "precedes their first transaction") == 3


def test_complete_journey_offers_and_events(cj_dir: Path) -> None:
    r = complete_journey.convert(cj_dir)
    offers = r.offers.set_index(S.OFFER_ID)
    assert offers[S.KIND].tolist() == ["credit", "credit"]
    assert offers[S.REWARD_VALUE].tolist() == [0.5, 0.5]  # campaign 2: the fallback median
    assert offers[S.DURATION_DAYS].tolist() == [31.0, 61.0]
    assert offers.loc["2", S.NAME] == "Campaign 2 (Type B)"
    assert _line(r, "offers", "no matched redemption") == 1
    ev = r.offer_events
    assert ev[S.EVENT_ID].tolist() == [
        "sent-2-11",
        "sent-2-12",
        "sent-1-10",
        "redeemed-1-10-555-20170105",
    ]
    assert ev[S.OFFER_ID].tolist() == ["2", "2", "1", "1"]
    assert ev[S.TS].tolist()[-1] == pd.Timestamp("2017-01-05")


@pytest.mark.parametrize(
    ("make", "name"),
    [("sbux_dir", "starbucks"), ("hill_dir", "hillstrom"), ("cj_dir", "complete_journey")],
)
def test_outputs_are_canonical(make: str, name: str, request: pytest.FixtureRequest) -> None:
    src = request.getfixturevalue(make)
    result = {"starbucks": starbucks, "hillstrom": hillstrom, "complete_journey": complete_journey}[
        name
    ].convert(src)
    for table in S.TABLE_ORDER:
        df = result.table(table)
        pd.testing.assert_frame_equal(df, to_canonical_frame(df, table))
        assert result.report.tables[table].written == len(df)
        lines = [ln for ln in result.report.lines if ln.table == table]
        assert result.report.tables[table].fixed == sum(
            ln.count for ln in lines if ln.kind == "fixed"
        )
        assert result.report.tables[table].rejected == sum(
            ln.count for ln in lines if ln.kind == "rejected"
        )


# ---- CLI ----------------------------------------------------------------------------------------
def _app() -> typer.Typer:
    app = typer.Typer()
    cmd_import.register(app)

    @app.callback()
    def main() -> None:  # a group, so `import` is a sub-command as in the real CLI
        """test app"""

    return app


def test_cli_import_writes_tables_and_report(hill_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        _app(), ["import", "hillstrom", "--src", str(hill_dir), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "rows per canonical table" in res.output
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["tables"]["members"]["written"] == 5
    assert sorted(p.name for p in out.iterdir()) == [
        REPORT_FILE,
        "members.parquet",
        "offer_events.parquet",
        "offers.parquet",
        "transactions.parquet",
    ]


def test_cli_import_missing_source_exits_1(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _app(), ["import", "starbucks", "--src", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 1
    assert "source file not found" in " ".join(res.output.split())  # rich wraps long paths


def test_cli_default_src_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OFFERS_SHARED_DATA", str(tmp_path))
    assert cmd_import.default_src("hillstrom") == tmp_path / "hillstrom"
