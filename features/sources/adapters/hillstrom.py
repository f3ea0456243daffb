"""Hillstrom MineThatData e-mail test (2008): one CSV of 64,000 customers -> canonical tables.

The source is a randomised three-arm test (Mens e-mail, Womens e-mail, no e-mail) with two-week
outcomes. The mapping (documented with counts in docs/adapters.md):

* members: one per CSV row, ``member_id`` = the 0-based row number zero-padded to 5 digits
  (duplicate rows are distinct customers and are kept); region = zip_code (``Surburban`` kept as
  spelled); segment = history_segment (as spelled); email_opt_in = true (everyone was in the
  e-mail test); joined_at is not in the source: :data:`SEND` minus 12 months for newbies (the
  earliest date consistent with "new in the past twelve months"), minus 24 months otherwise, so
  the newbie flag survives as "joined_at >= SEND - 12 months".
* offers: ``mens_email`` and ``womens_email``, kind informational, channel email, no reward.
* offer_events: a ``sent`` event per treated customer and a ``held_out`` event per control
  customer at :data:`SEND`, campaign :data:`CAMPAIGN`, propensity 1/3 (the design); a ``viewed``
  event at the end of the window for treated customers who visited (a control visit is not an
  offer event and has no canonical place: it is counted in the report, not written).
* transactions: the past-year ``history`` as one summary row at SEND minus ``recency`` months
  (category mens / womens / mens+womens, channel = the source channel lower-cased), and each
  conversion as one row of ``spend`` at the end of the two-week window (:data:`OUTCOME_TS`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.sources import schema as S
from features.sources.adapters.common import (
    AdapterResult,
    ImportReport,
    SourceDataError,
    require_columns,
    require_file,
)

__all__ = ["CAMPAIGN", "OUTCOME_TS", "SEND", "convert"]

DATASET = "hillstrom"
FILE = "Kevin_Hillstrom_MineThatData_E-MailAnalytics_DataMiningChallenge_2008.03.20.csv.gz"

# Not in the source: the challenge was published on 2008-03-20, so the send is placed three
# weeks earlier and its two-week outcome window closes before publication.
SEND = pd.Timestamp("2008-03-01")
WINDOW = pd.Timedelta(days=14)
# Outcomes are known only to lie within the window: they are stamped at its end, so a feature
# computed as of any time inside the window cannot see them.
OUTCOME_TS = SEND + WINDOW
CAMPAIGN = "email-2008-03-01"
PROPENSITY = 1.0 / 3.0
ARMS = {"Mens E-Mail": "mens_email", "Womens E-Mail": "womens_email", "No E-Mail": None}
OFFER_NAMES = {"mens_email": "Mens E-Mail", "womens_email": "Womens E-Mail"}
NEWBIE_JOINED = SEND - pd.DateOffset(months=12)
REGULAR_JOINED = SEND - pd.DateOffset(months=24)

COLUMNS = [
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
    "segment",
    "visit",
    "conversion",
    "spend",
]
_NUMERIC = ["recency", "history", "mens", "womens", "newbie", "visit", "conversion", "spend"]


def convert(src: Path) -> AdapterResult:
    """Read the Hillstrom CSV in ``src`` (a folder, or the file itself) into canonical tables."""
    src = Path(src)
    path = src if src.is_file() else require_file(src, FILE)
    raw = _read(path)
    report = ImportReport(DATASET, str(path))
    members, kept = _members(raw, report)
    lost = len(raw) - len(kept)
    for table in ("transactions", "offer_events"):
        report.read(table, len(raw))
        report.rejected(table, lost, FILE, "rows of customers rejected as members")
    frames = {
        "members": members,
        "offers": _offers(report),
        "transactions": _transactions(kept, report),
        "offer_events": _offer_events(kept, report),
    }
    return AdapterResult.build(frames, report)


def _read(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise SourceDataError(f"{path}: cannot be read as CSV ({exc})") from exc
    require_columns(raw, COLUMNS, path)
    df = raw[COLUMNS].copy()
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df.index = pd.RangeIndex(len(df))
    df["member_id"] = pd.Series(df.index, index=df.index).map("{:05d}".format)
    return df


def _flag(s: pd.Series) -> pd.Series:
    return s.isin([0, 1])


def _members(df: pd.DataFrame, report: ImportReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Members, and the source rows of the kept members (for the other tables)."""
    report.read("members", len(df))
    bad = ~_flag(df["newbie"])
    report.rejected(
        "members", int(bad.sum()), FILE, "rows whose newbie is not 0/1 (joined_at undefined)"
    )
    df = df[~bad]
    newbie = df["newbie"] == 1
    report.note(
        "members",
        int(newbie.sum()),
        FILE,
        f"newbies -> joined_at {NEWBIE_JOINED.date()} (SEND - 12 months); the others -> "
        f"{REGULAR_JOINED.date()} (SEND - 24 months); the source has no join date",
    )
    report.note(
        "members",
        int((df["zip_code"] == "Surburban").sum()),
        FILE,
        "members with zip_code 'Surburban' (sic) -> region kept as spelled",
    )
    members = pd.DataFrame(
        {
            S.MEMBER_ID: df["member_id"],
            S.JOINED_AT: np.where(newbie, NEWBIE_JOINED, REGULAR_JOINED).astype("datetime64[us]"),
            S.REGION: df["zip_code"],
            S.SEGMENT: df["history_segment"],
            S.EMAIL_OPT_IN: True,
        }
    )
    return members, df


def _offers(report: ImportReport) -> pd.DataFrame:
    report.read("offers", 0)
    report.note(
        "offers", len(OFFER_NAMES), FILE, "offers defined by the adapter, one per e-mail arm"
    )
    ids = list(OFFER_NAMES)
    return pd.DataFrame(
        {
            S.OFFER_ID: ids,
            S.NAME: [OFFER_NAMES[i] for i in ids],
            S.KIND: "informational",
            S.REWARD_VALUE: 0.0,
            S.COST: 0.0,
            S.DURATION_DAYS: WINDOW.days,
            S.CHANNELS_COL: "email",
            S.CATEGORY: ["mens", "womens"],
            S.VALID_FROM: SEND,
            S.VALID_TO: OUTCOME_TS,
        }
    )


def _offer_events(df: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """Assignment at the send (sent / held_out) and treated visits (viewed)."""
    known = df["segment"].isin(list(ARMS))
    report.rejected(
        "offer_events", int((~known).sum()), FILE, f"rows whose segment is none of {list(ARMS)}"
    )
    df = df[known]
    offer = df["segment"].map(ARMS)
    treated = offer.notna()
    for arm, n in df["segment"].value_counts().sort_index().items():
        report.note("offer_events", int(n), FILE, f"customers in arm '{arm}'")
    assign = pd.DataFrame(
        {
            S.EVENT_ID: df["member_id"] + np.where(treated, "-sent", "-held_out"),
            S.MEMBER_ID: df["member_id"],
            S.TS: SEND,
            S.EVENT: np.where(treated, "sent", "held_out"),
            S.OFFER_ID: offer,
            S.CAMPAIGN_ID: CAMPAIGN,
            S.CHANNEL: "email",
            S.PROPENSITY: PROPENSITY,
        }
    )
    visit = df["visit"] == 1
    bad_visit = ~_flag(df["visit"])
    report.rejected(
        "offer_events", int(bad_visit.sum()), FILE, "visit flags other than 0/1 (no viewed event)"
    )
    report.note(
        "offer_events",
        int((visit & treated).sum()),
        FILE,
        f"treated customers who visited -> a viewed event at the end of the window ({OUTCOME_TS})",
    )
    report.note(
        "offer_events",
        int((visit & ~treated).sum()),
        FILE,
        "control customers who visited -> not represented (a visit without an e-mail is not an "
        "offer event; read the raw file for visit uplift)",
    )
    seen = df[visit & treated]
    viewed = pd.DataFrame(
        {
            S.EVENT_ID: seen["member_id"] + "-viewed",
            S.MEMBER_ID: seen["member_id"],
            S.TS: OUTCOME_TS,
            S.EVENT: "viewed",
            S.OFFER_ID: offer[seen.index],
            S.CAMPAIGN_ID: CAMPAIGN,
            S.CHANNEL: "email",
        }
    )
    return pd.concat([assign, viewed]).sort_values(S.EVENT_ID, kind="stable")


def _transactions(df: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """The past-year history as one summary row, and each conversion as one row."""
    bad = ~df["recency"].between(1, 12) | ~(df["history"] >= 0)
    report.rejected(
        "transactions",
        int(bad.sum()),
        FILE,
        "rows whose recency is not 1..12 or history is missing/negative (no history row)",
    )
    hist = df[~bad]
    months = hist["recency"].astype("int64")
    ts = months.map({m: SEND - pd.DateOffset(months=m) for m in range(1, 13)})
    mens, womens = hist["mens"] == 1, hist["womens"] == 1
    category = pd.Series(None, index=hist.index, dtype=object)
    category[mens] = "mens"
    category[womens] = "womens"
    category[mens & womens] = "mens+womens"
    report.note(
        "transactions",
        len(hist),
        FILE,
        "past-year `history` -> one summary row at SEND - recency months",
    )
    history = pd.DataFrame(
        {
            S.TRANSACTION_ID: hist["member_id"] + "-history",
            S.MEMBER_ID: hist["member_id"],
            S.TS: ts.astype("datetime64[us]"),
            S.AMOUNT: hist["history"],
            S.CATEGORY: category,
            S.CHANNEL: hist["channel"].str.lower(),
        }
    )
    converted = df["conversion"] == 1
    bad_spend = converted & ~(df["spend"] >= 0)
    report.rejected(
        "transactions",
        int(bad_spend.sum()),
        FILE,
        "conversions with a missing or negative spend (no conversion row)",
    )
    orphan = ~converted & (df["spend"] > 0)
    report.rejected(
        "transactions",
        int(orphan.sum()),
        FILE,
        "rows with spend > 0 but conversion != 1 (no conversion row)",
    )
    conv = df[converted & ~bad_spend]
    report.note(
        "transactions",
        len(conv),
        FILE,
        f"conversions -> one row of `spend` at the end of the window ({OUTCOME_TS})",
    )
    conversions = pd.DataFrame(
        {
            S.TRANSACTION_ID: conv["member_id"] + "-conversion",
            S.MEMBER_ID: conv["member_id"],
            S.TS: OUTCOME_TS,
            S.AMOUNT: conv["spend"],
        }
    )
    return pd.concat([history, conversions]).sort_values(S.TRANSACTION_ID, kind="stable")
