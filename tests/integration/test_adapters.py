"""The adapters on the real public data sets: known figures, and the output validates cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.sources import schema as S
from features.sources.adapters import AdapterResult, complete_journey, hillstrom, starbucks, write
from features.sources.adapters.common import REPORT_FILE
from features.sources.validate import validate_dir

pytestmark = pytest.mark.integration


def _line(result: AdapterResult, table: str, words: str) -> int:
    """The count of the one report line of ``table`` whose reason contains ``words``."""
    found = [ln for ln in result.report.lines if ln.table == table and words in ln.reason]
    assert len(found) == 1, [ln.text for ln in result.report.lines]
    return found[0].count


def _assert_valid(result: AdapterResult, out: Path) -> None:
    write(result, out)
    checked = validate_dir(out)
    assert checked.problems == [], checked.summary()
    for table in S.TABLE_ORDER:
        assert checked.counts[table].kept == len(result.table(table))
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["tables"]["members"]["written"] == len(result.members)


# ---- Starbucks ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sbux(shared_data: Path) -> AdapterResult:
    return starbucks.convert(shared_data / "starbucks")


def test_starbucks_counts(sbux: AdapterResult) -> None:
    t = sbux.report.tables
    assert (t["members"].read, t["members"].written, t["members"].rejected) == (17_000, 17_000, 0)
    assert (t["offers"].read, t["offers"].written) == (10, 10)
    assert t["offer_events"].read + t["transactions"].read == 306_534
    assert sbux.offer_events[S.EVENT].value_counts().to_dict() == {
        "sent": 76_277,
        "viewed": 57_725,
        "redeemed": 33_579,
    }
    assert len(sbux.transactions) == 138_953
    assert t["offer_events"].rejected == 0 and t["transactions"].rejected == 0


def test_starbucks_fixes(sbux: AdapterResult) -> None:
    members = sbux.members
    assert sbux.report.tables["members"].fixed == 2_175
    assert members[S.AGE].isna().sum() == 2_175
    unknown = members[S.AGE].isna()
    assert members.loc[unknown, S.GENDER].isna().all()
    assert members.loc[unknown, S.INCOME].isna().all()
    assert members.loc[~unknown, S.AGE].max() <= 101
    # 397 identical completions are real: each is backed by another active receipt.
    assert _line(sbux, "offer_events", "exact duplicate 'offer completed' rows kept") == 397
    assert _line(sbux, "offer_events", "not backed by a further active receipt") == 0
    assert _line(sbux, "offer_events", "key `offer_id`") == 33_579
    assert sbux.offer_events[S.EVENT_ID].is_unique
    assert sbux.transactions[S.TRANSACTION_ID].is_unique


def test_starbucks_times_and_offers(sbux: AdapterResult) -> None:
    assert sbux.members[S.JOINED_AT].max() == pd.Timestamp("2018-07-26")
    assert sbux.members[S.JOINED_AT].max() < starbucks.TEST_START
    ts = pd.concat([sbux.offer_events[S.TS], sbux.transactions[S.TS]])
    assert ts.min() == starbucks.TEST_START
    assert ts.max() == starbucks.TEST_START + pd.Timedelta(hours=714)
    assert sbux.offers[S.KIND].value_counts().to_dict() == {
        "bogo": 4,
        "credit": 4,
        "informational": 2,
    }
    channels = set(sbux.offers[S.CHANNELS_COL].str.split("|").explode())
    assert channels == {"email", "app", "web", "social"}
    informational = sbux.offers.loc[sbux.offers[S.KIND] == "informational", S.OFFER_ID]
    redeemed = sbux.offer_events[sbux.offer_events[S.EVENT] == "redeemed"]
    assert not redeemed[S.OFFER_ID].isin(informational).any()
    assert sbux.offer_events[S.CAMPAIGN_ID].nunique() == 6
    assert sbux.offer_events[S.CAMPAIGN_ID].notna().all()


def test_starbucks_validates(sbux: AdapterResult, tmp_path: Path) -> None:
    _assert_valid(sbux, tmp_path)


# ---- Hillstrom ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hill(shared_data: Path) -> AdapterResult:
    return hillstrom.convert(shared_data / "hillstrom")


@pytest.fixture(scope="module")
def hill_raw(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "hillstrom" / hillstrom.FILE)


def test_hillstrom_arms(hill: AdapterResult, hill_raw: pd.DataFrame) -> None:
    assert len(hill.members) == 64_000
    assert hill_raw.duplicated().sum() == 6_562  # distinct customers, all kept
    assign = hill.offer_events[hill.offer_events[S.EVENT].isin(["sent", "held_out"])]
    assert len(assign) == 64_000 and assign[S.MEMBER_ID].is_unique
    arms = assign[S.OFFER_ID].fillna("control").value_counts().to_dict()
    assert arms == {"womens_email": 21_387, "mens_email": 21_307, "control": 21_306}
    assert (assign[S.PROPENSITY] == 1 / 3).all()
    assert (assign[S.TS] == hillstrom.SEND).all()
    # Row order is kept: member i is CSV row i, in its arm.
    control = assign.loc[assign[S.EVENT] == "held_out", S.MEMBER_ID].astype(int)
    assert (hill_raw.loc[control, "segment"] == "No E-Mail").all()


def test_hillstrom_outcomes(hill: AdapterResult, hill_raw: pd.DataFrame) -> None:
    tx = hill.transactions
    conv = tx[tx[S.TRANSACTION_ID].str.endswith("-conversion")]
    assert len(conv) == 578 == hill_raw["conversion"].sum()
    assert conv[S.AMOUNT].sum() == pytest.approx(hill_raw["spend"].sum())
    assert (conv[S.TS] == hillstrom.OUTCOME_TS).all()
    history = tx[tx[S.TRANSACTION_ID].str.endswith("-history")]
    assert len(history) == 64_000
    assert history[S.AMOUNT].sum() == pytest.approx(hill_raw["history"].sum())
    assert (history[S.TS] < hillstrom.SEND).all()
    viewed = hill.offer_events[hill.offer_events[S.EVENT] == "viewed"]
    treated = hill_raw["segment"] != "No E-Mail"
    assert len(viewed) == 7_132 == (hill_raw["visit"] & treated).sum()
    assert _line(hill, "offer_events", "control customers who visited") == 2_262


def test_hillstrom_members(hill: AdapterResult) -> None:
    region = hill.members[S.REGION].value_counts().to_dict()
    assert region == {"Surburban": 28_776, "Urban": 25_661, "Rural": 9_563}
    assert hill.members[S.SEGMENT].nunique() == 7
    assert hill.members[S.EMAIL_OPT_IN].all()


def test_hillstrom_validates(hill: AdapterResult, tmp_path: Path) -> None:
    _assert_valid(hill, tmp_path)


# ---- The Complete Journey ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def cj(shared_data: Path) -> AdapterResult:
    return complete_journey.convert(shared_data / "complete-journey")


def test_complete_journey_members(cj: AdapterResult) -> None:
    assert len(cj.members) == 2_469
    assert cj.members[S.AGE].notna().sum() == 801
    assert cj.members[S.INCOME].notna().sum() == 801
    assert _line(cj, "members", "precedes their first transaction") == 155
    assert cj.members[S.JOINED_AT].min() == pd.Timestamp("2016-11-14")


def test_complete_journey_transactions(cj: AdapterResult) -> None:
    t = cj.report.tables["transactions"]
    assert (t.read, t.written, t.rejected, t.fixed) == (1_469_307, 1_469_307, 0, 0)
    assert _line(cj, "transactions", "negative sales_value") == 0
    assert _line(cj, "transactions", "quantity 0") == 8_869
    assert _line(cj, "transactions", "sales_value 0") == 11_226
    assert _line(cj, "transactions", "has no row in") == 4_836
    tx = cj.transactions
    assert tx[S.TRANSACTION_ID].nunique() == 155_848
    assert tx[S.SKU].nunique() == 68_509
    assert tx[S.STORE_ID].nunique() == 457
    assert tx[S.AMOUNT].sum() == pytest.approx(4_596_039.58)
    assert tx[S.CATEGORY].isna().sum() == 4_836 + _line(cj, "transactions", "no product_category")


def test_complete_journey_offers_and_events(cj: AdapterResult) -> None:
    assert len(cj.offers) == 27
    assert (cj.offers[S.REWARD_VALUE] > 0).all()
    events = cj.offer_events
    assert events[S.EVENT].value_counts().to_dict() == {"sent": 6_589, "redeemed": 2_102}
    assert events[S.EVENT_ID].is_unique
    redeemed = events[events[S.EVENT] == "redeemed"]
    assert redeemed[S.MEMBER_ID].nunique() == 410
    assert cj.report.tables["offer_events"].rejected == 0


def test_complete_journey_validates(cj: AdapterResult, tmp_path: Path) -> None:
    _assert_valid(cj, tmp_path)
