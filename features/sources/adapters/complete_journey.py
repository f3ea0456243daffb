"""The Complete Journey 2.0 (84.51°, grocery, calendar 2017) -> canonical tables.

Mapping (docs/adapters.md has the reasons and the measured counts):

* members = households seen in transactions, campaigns or coupon redemptions; joined_at (absent
  from the source) = the household's earliest activity: first transaction, first campaign
  received, or first redemption. Demographic bins -> age / income midpoints (null for the 1,668
  households without demographics).
* transactions: one row per line; transaction_id = basket_id, sku = product_id, category =
  products.product_category, quantity, store_id, amount = sales_value. Negative sales_value
  breaks the contract and is rejected; zero amounts and zero quantities are kept and counted.
* offers = the 27 campaigns (the unit the source says each household received); kind credit
  (cents-off coupons); reward_value = cost = median coupon discount of the campaign's
  redemptions matched to a basket line (overall median when none matched).
* offer_events: ``sent`` per (campaign, household) at the campaign start; ``redeemed`` per
  coupon redemption at its date, offer_id = campaign.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.sources import schema as S
from features.sources.adapters.common import (
    AdapterResult,
    ImportReport,
    SourceDataError,
    require_file,
)

__all__ = ["AGE_MIDPOINTS", "INCOME_MIDPOINTS", "convert"]

DATASET = "complete-journey"
TX, PRODUCTS, DEMOGRAPHICS = "transactions.parquet", "products.parquet", "demographics.parquet"
CAMPAIGNS, DESCRIPTIONS = "campaigns.parquet", "campaign_descriptions.parquet"
COUPONS, REDEMPTIONS = "coupons.parquet", "coupon_redemptions.parquet"

# Bins [lo, next lo) -> their midpoint; an open top bin -> lo + half the width of the bin below.
AGE_MIDPOINTS = {
    "19-24": 22.0,
    "25-34": 30.0,
    "35-44": 40.0,
    "45-54": 50.0,
    "55-64": 60.0,
    "65+": 70.0,
}
INCOME_MIDPOINTS = {
    "Under 15K": 7_500.0,
    "15-24K": 20_000.0,
    "25-34K": 30_000.0,
    "35-49K": 42_500.0,
    "50-74K": 62_500.0,
    "75-99K": 87_500.0,
    "100-124K": 112_500.0,
    "125-149K": 137_500.0,
    "150-174K": 162_500.0,
    "175-199K": 187_500.0,
    "200-249K": 225_000.0,
    "250K+": 275_000.0,
}
OFFER_KIND = "credit"

_TX_COLUMNS = [
    "household_id",
    "store_id",
    "basket_id",
    "product_id",
    "quantity",
    "sales_value",
    "coupon_disc",
    "transaction_timestamp",
]


def convert(src: Path) -> AdapterResult:
    """Read the Complete Journey Parquet files in ``src`` into canonical tables."""
    src = Path(src)
    report = ImportReport(DATASET, str(src))
    tx = _read(src, TX, _TX_COLUMNS)
    desc = _read(src, DESCRIPTIONS, ["campaign_id", "campaign_type", "start_date", "end_date"])
    reached = _read(src, CAMPAIGNS, ["campaign_id", "household_id"])
    redeemed = _read(
        src, REDEMPTIONS, ["household_id", "coupon_upc", "campaign_id", "redemption_date"]
    )
    coupons = _read(src, COUPONS, ["coupon_upc", "product_id", "campaign_id"])

    transactions = _transactions(
        tx, _read(src, PRODUCTS, ["product_id", "product_category"]), report
    )
    offers = _offers(desc, redeemed, coupons, tx, report)
    events = _offer_events(reached, redeemed, desc, offers, coupons, report)
    members = _members(
        tx, events, _read(src, DEMOGRAPHICS, ["household_id", "age", "income"]), report
    )
    frames = {
        "members": members,
        "offers": offers,
        "transactions": transactions,
        "offer_events": events,
    }
    return AdapterResult.build(frames, report)


def _read(src: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """Only ``columns`` of a Parquet file; a SourceDataError names absent columns."""
    path = require_file(src, name)
    try:
        present = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceDataError(f"{path}: cannot be read as Parquet ({exc})") from exc
    missing = [c for c in columns if c not in present]
    if missing:
        raise SourceDataError(
            f"{name}: required column(s) {missing} absent; columns present: {present}"
        )
    return pq.read_table(path, columns=columns).to_pandas()


def _ids(s: pd.Series) -> pd.Series:
    """Integer ids as strings (through Arrow: fast on millions of rows)."""
    return pc.cast(pa.array(s, type=pa.int64()), pa.string()).to_pandas().set_axis(s.index)


def _naive(ts: pd.Series) -> pd.Series:
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        return ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts


# ---- transactions -----------------------------------------------------------------------------
def _transactions(tx: pd.DataFrame, products: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    report.read("transactions", len(tx))
    amount = tx["sales_value"]
    ts = _naive(tx["transaction_timestamp"])
    checks = [
        (amount.isna(), "lines without a sales_value"),
        (
            amount < 0,
            "lines with a negative sales_value (a return/adjustment; amounts must be >= 0)",
        ),
        (ts.isna(), "lines without a transaction_timestamp"),
        (tx["quantity"] < 0, "lines with a negative quantity"),
    ]
    bad = pd.Series(False, index=tx.index)
    for mask, reason in checks:
        new = mask.fillna(False) & ~bad
        report.rejected("transactions", int(new.sum()), TX, reason)
        bad |= new
    tx, ts = tx[~bad], ts[~bad]
    zero_qty = tx["quantity"] == 0
    report.note(
        "transactions",
        int(zero_qty.sum()),
        TX,
        f"lines with quantity 0 kept as they are ({int((zero_qty & (tx['sales_value'] > 0)).sum())}"
        " of them with a positive sales_value); filter them for implicit feedback",
    )
    report.note(
        "transactions",
        int((tx["sales_value"] == 0).sum()),
        TX,
        "lines with sales_value 0 kept as they are (amount 0)",
    )
    products = products.drop_duplicates("product_id")
    known = tx["product_id"].isin(products["product_id"])
    report.note(
        "transactions",
        int((~known).sum()),
        TX,
        f"lines whose product_id ({tx.loc[~known, 'product_id'].nunique()} distinct) has no row in "
        f"{PRODUCTS} -> category null",
    )
    category = tx["product_id"].map(products.set_index("product_id")["product_category"])
    report.note(
        "transactions",
        int((known & category.isna()).sum()),
        TX,
        f"lines whose product has no product_category in {PRODUCTS} -> category null",
    )
    return pd.DataFrame(
        {
            S.TRANSACTION_ID: _ids(tx["basket_id"]),
            S.MEMBER_ID: _ids(tx["household_id"]),
            S.TS: ts,
            S.AMOUNT: tx["sales_value"],
            S.SKU: _ids(tx["product_id"]),
            S.CATEGORY: category,
            S.QUANTITY: tx["quantity"].astype("float64"),
            S.STORE_ID: _ids(tx["store_id"]),
        }
    )


# ---- offers -----------------------------------------------------------------------------------
def _offers(
    desc: pd.DataFrame,
    redeemed: pd.DataFrame,
    coupons: pd.DataFrame,
    tx: pd.DataFrame,
    report: ImportReport,
) -> pd.DataFrame:
    """One offer per campaign, valued by the coupon discounts its redemptions gave."""
    report.read("offers", len(desc))
    desc = desc.assign(start_date=_naive(desc["start_date"]), end_date=_naive(desc["end_date"]))
    checks = [
        (desc["campaign_id"].isna(), "campaigns without a campaign_id"),
        (desc["campaign_id"].duplicated(keep="first"), "rows repeating a campaign_id (first kept)"),
        (desc["start_date"].isna() | desc["end_date"].isna(), "campaigns without start/end date"),
        (desc["end_date"] < desc["start_date"], "campaigns ending before they start"),
    ]
    bad = pd.Series(False, index=desc.index)
    for mask, reason in checks:
        new = mask.fillna(False) & ~bad
        report.rejected("offers", int(new.sum()), DESCRIPTIONS, reason)
        bad |= new
    desc = desc[~bad].sort_values("campaign_id")
    value = _coupon_value(redeemed, coupons, tx).reindex(desc["campaign_id"])
    fallback = float(value.median()) if value.notna().any() else 0.0
    report.note(
        "offers",
        int(value.notna().sum()),
        DESCRIPTIONS,
        "campaigns valued at the median coupon_disc of their redemptions matched to a basket line",
    )
    report.note(
        "offers",
        int(value.isna().sum()),
        DESCRIPTIONS,
        f"campaigns with no matched redemption -> valued at the median over campaigns "
        f"({fallback:g})",
    )
    reward = value.fillna(fallback).to_numpy()
    campaign = _ids(desc["campaign_id"])
    return pd.DataFrame(
        {
            S.OFFER_ID: campaign,
            S.NAME: "Campaign " + campaign + " (" + desc["campaign_type"].fillna("?") + ")",
            S.KIND: OFFER_KIND,
            S.REWARD_VALUE: reward,
            S.COST: reward,
            S.DURATION_DAYS: (desc["end_date"] - desc["start_date"]).dt.days.astype("float64"),
            S.VALID_FROM: desc["start_date"],
            S.VALID_TO: desc["end_date"],
        }
    )


def _coupon_value(redeemed: pd.DataFrame, coupons: pd.DataFrame, tx: pd.DataFrame) -> pd.Series:
    """Per campaign: median coupon_disc of lines bought with a redeemed coupon that day.

    A redemption is matched to the household's basket lines on the redemption date whose
    product is one of the coupon's products and that carry a coupon discount.
    """
    lines = tx.loc[
        tx["coupon_disc"] > 0,
        ["household_id", "product_id", "coupon_disc", "transaction_timestamp"],
    ]
    lines = lines.assign(day=_naive(lines["transaction_timestamp"]).dt.normalize())
    red = redeemed.assign(day=_naive(redeemed["redemption_date"]).dt.normalize())
    m = red.merge(coupons, on=["coupon_upc", "campaign_id"]).merge(
        lines, on=["household_id", "product_id", "day"]
    )
    return m.groupby("campaign_id")["coupon_disc"].median()


# ---- offer events -----------------------------------------------------------------------------
def _offer_events(
    reached: pd.DataFrame,
    redeemed: pd.DataFrame,
    desc: pd.DataFrame,
    offers: pd.DataFrame,
    coupons: pd.DataFrame,
    report: ImportReport,
) -> pd.DataFrame:
    report.read("offer_events", len(reached) + len(redeemed))
    start = pd.Series(offers[S.VALID_FROM].to_numpy(), index=offers[S.OFFER_ID].to_numpy())
    sent = _reject_events(reached, ["campaign_id", "household_id"], offers, CAMPAIGNS, report)
    campaign = _ids(sent["campaign_id"])
    household = _ids(sent["household_id"])
    sent_events = pd.DataFrame(
        {
            S.EVENT_ID: "sent-" + campaign + "-" + household,
            S.MEMBER_ID: household,
            S.TS: campaign.map(start),
            S.EVENT: "sent",
            S.OFFER_ID: campaign,
            S.CAMPAIGN_ID: campaign,
        }
    )
    red = _reject_events(
        redeemed,
        ["household_id", "coupon_upc", "campaign_id", "redemption_date"],
        offers,
        REDEMPTIONS,
        report,
    )
    pair = pd.MultiIndex.from_frame(red[["campaign_id", "household_id"]])
    reached_pairs = pd.MultiIndex.from_frame(reached[["campaign_id", "household_id"]])
    report.note(
        "offer_events",
        int((~pair.isin(reached_pairs)).sum()),
        REDEMPTIONS,
        f"redemptions whose (campaign, household) is not in {CAMPAIGNS} (kept)",
    )
    report.note(
        "offer_events",
        int((~red["coupon_upc"].isin(coupons["coupon_upc"])).sum()),
        REDEMPTIONS,
        f"redemptions whose coupon_upc is not in {COUPONS} (kept)",
    )
    campaign = _ids(red["campaign_id"])
    household = _ids(red["household_id"])
    ts = _naive(red["redemption_date"])
    report.note(
        "offer_events",
        int((ts < campaign.map(start)).sum()),
        REDEMPTIONS,
        "redemptions dated before their campaign's start (kept)",
    )
    redeemed_events = pd.DataFrame(
        {
            # The coupon UPC and date make the id unique and keep the coupon traceable.
            S.EVENT_ID: "redeemed-"
            + campaign
            + "-"
            + household
            + "-"
            + _ids(red["coupon_upc"])
            + "-"
            + ts.dt.strftime("%Y%m%d"),
            S.MEMBER_ID: household,
            S.TS: ts,
            S.EVENT: "redeemed",
            S.OFFER_ID: campaign,
            S.CAMPAIGN_ID: campaign,
        }
    )
    events = pd.concat([sent_events, redeemed_events], ignore_index=True)
    return events.sort_values([S.TS, S.EVENT_ID], kind="stable")


def _reject_events(
    df: pd.DataFrame, key: list[str], offers: pd.DataFrame, file: str, report: ImportReport
) -> pd.DataFrame:
    """Drop rows with a null key, an unknown campaign, or an exact repeat, each counted."""
    checks = [
        (df[key].isna().any(axis=1), f"rows with a null in {key}"),
        (
            ~_ids(df["campaign_id"]).isin(offers[S.OFFER_ID]),
            f"rows whose campaign is not a kept campaign of {DESCRIPTIONS}",
        ),
        (df.duplicated(key, keep="first"), "exact repeats of an earlier row (first kept)"),
    ]
    bad = pd.Series(False, index=df.index)
    for mask, reason in checks:
        new = mask.fillna(False) & ~bad
        report.rejected("offer_events", int(new.sum()), file, reason)
        bad |= new
    return df[~bad]


# ---- members ----------------------------------------------------------------------------------
def _members(
    tx: pd.DataFrame, events: pd.DataFrame, demo: pd.DataFrame, report: ImportReport
) -> pd.DataFrame:
    """Households with any activity; joined_at = earliest activity; demographic midpoints."""
    first_tx = _naive(tx.groupby("household_id")["transaction_timestamp"].min())
    first_event = events.groupby(events[S.MEMBER_ID].astype("int64"))[S.TS].min()
    first = pd.concat([first_tx, first_event], axis=1).min(axis=1).sort_index()
    report.note(
        "members",
        int((first < first_tx.reindex(first.index)).fillna(True).sum()),
        CAMPAIGNS,
        "households whose first campaign (or redemption) precedes their first transaction -> "
        "joined_at = that earlier date",
    )
    first.index = _ids(pd.Series(first.index)).to_numpy()
    demo = demo.assign(member=_ids(demo["household_id"]))
    known = demo["member"].isin(first.index)
    dup = demo["member"].duplicated(keep="first")
    report.read("members", len(first) + int((~known & ~dup).sum()))
    report.rejected(
        "members",
        int((~known & ~dup).sum()),
        DEMOGRAPHICS,
        "households with demographics but no transaction, campaign or redemption (no join date)",
    )
    report.rejected(
        "members", int((known & dup).sum()), DEMOGRAPHICS, "repeated household rows (first kept)"
    )
    demo = demo[known & ~dup].set_index("member")
    age = demo["age"].map(AGE_MIDPOINTS)
    income = demo["income"].map(INCOME_MIDPOINTS)
    report.note("members", len(demo), DEMOGRAPHICS, "households with demographics")
    report.fixed(
        "members",
        int(((demo["age"].notna() & age.isna()) | (demo["income"].notna() & income.isna())).sum()),
        DEMOGRAPHICS,
        "households with an age or income bin not in the known bins -> that value null",
    )
    return pd.DataFrame(
        {
            S.MEMBER_ID: first.index,
            S.JOINED_AT: first.to_numpy(),
            S.AGE: age.reindex(first.index).to_numpy(),
            S.INCOME: income.reindex(first.index).to_numpy(),
        }
    )
