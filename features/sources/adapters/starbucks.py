"""Starbucks rewards-app offers (Udacity capstone): portfolio, profile, transcript -> canonical.

Mapping (docs/adapters.md has the full table and the measured counts):

* ``portfolio.json`` -> offers: bogo -> ``bogo``, discount -> ``credit`` (a fixed money amount
  off once ``difficulty`` is spent, not a percentage), informational -> ``informational``;
  difficulty -> min_spend, reward -> reward_value and cost, duration -> duration_days, channels
  mobile -> app (email, web, social unchanged).
* ``profile.json.gz`` -> members: became_member_on (YYYYMMDD) -> joined_at; age 118 is the
  source's code for "unknown" and sets age, gender and income to null.
* ``transcript.json.gz`` -> offer received/viewed/completed -> sent/viewed/redeemed events, and
  one transactions row per ``transaction`` event (a receipt total, no sku or category).
  ``time`` is hours since :data:`TEST_START`. The offer id is read from ``offer id`` or
  ``offer_id`` (completed events use the underscore). ``event_id`` / ``transaction_id`` are the
  0-based transcript line (``t000123``), so they are deterministic and unique.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.sources import schema as S
from features.sources.adapters.common import (
    AdapterResult,
    ImportReport,
    read_json_lines,
    require_file,
)

__all__ = ["TEST_START", "convert"]

DATASET = "starbucks"
PORTFOLIO, PROFILE, TRANSCRIPT = "portfolio.json", "profile.json.gz", "transcript.json.gz"

# The source gives only "hours since the start of the test". The last became_member_on is
# 2018-07-26, so a start on 2018-08-01 puts every join before the test and every event after it.
TEST_START = pd.Timestamp("2018-08-01")
MISSING_AGE = 118

KINDS = {"bogo": "bogo", "discount": "credit", "informational": "informational"}
CHANNEL_NAMES = {"email": "email", "mobile": "app", "web": "web", "social": "social"}
EVENTS = {"offer received": "sent", "offer viewed": "viewed", "offer completed": "redeemed"}
TRANSACTION_EVENT = "transaction"

_PORTFOLIO_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("offer_type", pa.string()),
        ("difficulty", pa.float64()),
        ("reward", pa.float64()),
        ("duration", pa.float64()),
        ("channels", pa.list_(pa.string())),
    ]
)
_PROFILE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("gender", pa.string()),
        ("age", pa.float64()),
        ("became_member_on", pa.string()),
        ("income", pa.float64()),
    ]
)
_VALUE = pa.struct(
    [
        ("offer id", pa.string()),
        ("offer_id", pa.string()),
        ("amount", pa.float64()),
        ("reward", pa.float64()),
    ]
)
_TRANSCRIPT_SCHEMA = pa.schema(
    [("person", pa.string()), ("event", pa.string()), ("value", _VALUE), ("time", pa.float64())]
)


def convert(src: Path) -> AdapterResult:
    """Read the three Starbucks files in ``src`` and return the canonical tables and report."""
    src = Path(src)
    report = ImportReport(DATASET, str(src))
    offers = _offers(read_json_lines(require_file(src, PORTFOLIO), _PORTFOLIO_SCHEMA), report)
    members = _members(read_json_lines(require_file(src, PROFILE), _PROFILE_SCHEMA), report)
    transcript = read_json_lines(require_file(src, TRANSCRIPT), _TRANSCRIPT_SCHEMA)
    events = _offer_events(transcript, members, offers, report)
    transactions = _transactions(transcript, members, report)
    frames = {
        "members": members,
        "offers": offers,
        "transactions": transactions,
        "offer_events": events,
    }
    return AdapterResult.build(frames, report)


def _keep_unique(
    df: pd.DataFrame, key: str, table: str, file: str, report: ImportReport
) -> pd.DataFrame:
    """Reject rows without ``key`` and repeats of a key (first kept), each under a reason."""
    missing = df[key].isna()
    report.rejected(table, int(missing.sum()), file, f"rows without `{key}`")
    df = df[~missing]
    dup = df[key].duplicated(keep="first")
    report.rejected(table, int(dup.sum()), file, f"rows repeating an earlier `{key}` (first kept)")
    return df[~dup]


def _offers(raw: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    report.read("offers", len(raw))
    df = _keep_unique(raw, "id", "offers", PORTFOLIO, report)
    kind = df["offer_type"].map(KINDS)
    report.rejected(
        "offers",
        int(kind.isna().sum()),
        PORTFOLIO,
        f"offers with an offer_type other than {sorted(KINDS)}",
    )
    numeric = df[["difficulty", "reward", "duration"]]
    bad = numeric.isna().any(axis=1) | (numeric < 0).any(axis=1)
    report.rejected(
        "offers",
        int((bad & kind.notna()).sum()),
        PORTFOLIO,
        "offers with a missing or negative difficulty, reward or duration",
    )
    df = df[kind.notna() & ~bad].copy()
    report.note(
        "offers",
        int((df["offer_type"] == "discount").sum()),
        PORTFOLIO,
        "discount offers -> kind credit (a fixed amount off once min_spend is reached)",
    )
    channels = _channels(df, report)
    name = (
        df["offer_type"]
        + ": spend "
        + df["difficulty"].map("{:g}".format)
        + ", reward "
        + df["reward"].map("{:g}".format)
        + ", "
        + df["duration"].map("{:g}".format)
        + " days"
    )
    return pd.DataFrame(
        {
            S.OFFER_ID: df["id"],
            S.NAME: name,
            S.KIND: df["offer_type"].map(KINDS),
            # No cost data: the business is assumed to pay the face value of the reward.
            S.REWARD_VALUE: df["reward"],
            S.COST: df["reward"],
            S.MIN_SPEND: df["difficulty"],
            S.DURATION_DAYS: df["duration"],
            S.CHANNELS_COL: channels,
        }
    )


def _channels(df: pd.DataFrame, report: ImportReport) -> pd.Series:
    """Source channel lists -> ``|``-separated canonical channels in CHANNELS order."""
    ex = df["channels"].explode()
    mapped = ex.map(CHANNEL_NAMES)
    unknown = ex.notna() & mapped.isna()
    report.fixed(
        "offers",
        int(unknown.groupby(level=0).any().sum()),
        PORTFOLIO,
        f"offers listing a channel other than {sorted(CHANNEL_NAMES)} -> that channel left out",
    )
    order = {c: i for i, c in enumerate(S.CHANNELS)}
    kept = mapped.dropna().to_frame("c")
    kept["o"] = kept["c"].map(order)
    kept = kept.reset_index().sort_values(["index", "o"]).drop_duplicates(["index", "c"])
    joined = kept.groupby("index")["c"].agg(S.LIST_SEPARATOR.join)
    return joined.reindex(df.index)


def _members(raw: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    report.read("members", len(raw))
    df = _keep_unique(raw, "id", "members", PROFILE, report)
    joined = pd.to_datetime(df["became_member_on"], format="%Y%m%d", errors="coerce")
    report.rejected(
        "members",
        int(joined.isna().sum()),
        PROFILE,
        "members whose became_member_on is not a YYYYMMDD date (joined_at is required)",
    )
    df, joined = df[joined.notna()], joined[joined.notna()]
    report.note(
        "members",
        int((joined > TEST_START).sum()),
        PROFILE,
        f"members who joined after the chosen test start {TEST_START.date()}",
    )
    unknown = df["age"] == MISSING_AGE
    report.fixed(
        "members",
        int(unknown.sum()),
        PROFILE,
        f"members with age {MISSING_AGE} (the source's 'unknown') -> age, gender, income "
        "set to null",
    )
    return pd.DataFrame(
        {
            S.MEMBER_ID: df["id"],
            S.JOINED_AT: joined,
            S.AGE: df["age"].mask(unknown),
            S.GENDER: df["gender"].mask(unknown),
            S.INCOME: df["income"].mask(unknown),
        }
    )


def _line_ids(index: pd.Index) -> pd.Series:
    return pd.Series(index, index=index).map("t{:06d}".format)


def _hours(time: pd.Series) -> pd.Series:
    return TEST_START + pd.to_timedelta(time, unit="h")


def _offer_events(
    tr: pd.DataFrame, members: pd.DataFrame, offers: pd.DataFrame, report: ImportReport
) -> pd.DataFrame:
    """received/viewed/completed rows -> sent/viewed/redeemed events (unknown rows rejected)."""
    is_tx = tr["event"] == TRANSACTION_EVENT
    ev = tr[~is_tx]
    report.read("offer_events", len(ev))
    event = ev["event"].map(EVENTS)
    report.rejected(
        "offer_events",
        int(event.isna().sum()),
        TRANSCRIPT,
        f"rows whose event is none of {sorted(EVENTS)} or '{TRANSACTION_EVENT}'",
    )
    ev = ev[event.notna()].assign(event=event[event.notna()])
    underscore = ev["value.offer id"].isna() & ev["value.offer_id"].notna()
    report.note(
        "offer_events",
        int(underscore.sum()),
        TRANSCRIPT,
        "events with the offer under the key `offer_id` (not `offer id`); both keys are read",
    )
    ev = ev.assign(offer=ev["value.offer id"].fillna(ev["value.offer_id"]))
    checks = [
        (ev["offer"].isna(), "events without an offer id in `value`"),
        (~ev["offer"].isin(offers[S.OFFER_ID]), "events whose offer id is not in the portfolio"),
        (~ev["person"].isin(members[S.MEMBER_ID]), "events whose person is not a kept member"),
        (ev["time"].isna() | (ev["time"] < 0), "events with a missing or negative time"),
    ]
    ev = _reject_each(ev, checks, "offer_events", report)
    kinds = ev["offer"].map(offers.set_index(S.OFFER_ID)[S.KIND])
    info_done = (ev["event"] == "redeemed") & (kinds == "informational")
    ev = _reject_each(
        ev,
        [(info_done, "completions of informational offers (cannot be redeemed)")],
        "offer_events",
        report,
    )
    ev = _duplicate_completions(ev, offers, report)
    ts = _hours(ev["time"])
    sent_campaign = "send-h" + ev["time"].astype("int64").map("{:03d}".format)
    campaign = sent_campaign.where(ev["event"] == "sent")
    campaign = campaign.fillna(_campaign_of_latest_send(ev, ts, sent_campaign, report))
    return pd.DataFrame(
        {
            S.EVENT_ID: _line_ids(ev.index),
            S.MEMBER_ID: ev["person"],
            S.TS: ts,
            S.EVENT: ev["event"],
            S.OFFER_ID: ev["offer"],
            S.CAMPAIGN_ID: campaign,
        }
    )


def _reject_each(
    df: pd.DataFrame, checks: list[tuple[pd.Series, str]], table: str, report: ImportReport
) -> pd.DataFrame:
    """Reject rows failing each check in turn; a row is counted under its first failed check."""
    bad = pd.Series(False, index=df.index)
    for mask, reason in checks:
        new = mask.fillna(True) & ~bad
        report.rejected(table, int(new.sum()), TRANSCRIPT, reason)
        bad |= new
    return df[~bad]


def _duplicate_completions(
    ev: pd.DataFrame, offers: pd.DataFrame, report: ImportReport
) -> pd.DataFrame:
    """Keep identical completions only as far as the member held that many active copies.

    A member who received the same offer twice and completes both at once yields two identical
    "offer completed" rows; the k-th copy is kept when the member had at least k receipts of the
    offer whose validity window (received .. received + duration) covers that hour. Other exact
    copies of any event are rejected.
    """
    key = ["person", "event", "offer", "time"]
    copy_no = ev.groupby(key, sort=False).cumcount() + 1  # 1 for the first of identical rows
    repeat = copy_no > 1
    is_done = ev["event"] == "redeemed"
    where = ["person", "offer", "time"]
    active = np.zeros(len(ev))
    if (repeat & is_done).any():
        groups = ev.loc[repeat & is_done, where].drop_duplicates()
        sends = ev.loc[ev["event"] == "sent", where].rename(columns={"time": "sent"})
        m = groups.merge(sends, on=["person", "offer"])
        days = m["offer"].map(offers.set_index(S.OFFER_ID)[S.DURATION_DAYS])
        m = m[(m["sent"] <= m["time"]) & (m["time"] <= m["sent"] + 24 * days)]
        n_active = m.groupby(where).size()
        active = n_active.reindex(pd.MultiIndex.from_frame(ev[where])).fillna(0).to_numpy()
    backed = repeat & is_done & (copy_no <= active)
    report.note(
        "offer_events",
        int(backed.sum()),
        TRANSCRIPT,
        "exact duplicate 'offer completed' rows kept as separate redemptions: the member held "
        "that many active copies of the offer (each row has its own event_id)",
    )
    unbacked = repeat & ~backed
    report.rejected(
        "offer_events",
        int(unbacked.sum()),
        TRANSCRIPT,
        "exact duplicate rows not backed by a further active receipt of the offer",
    )
    return ev[~unbacked]


def _campaign_of_latest_send(
    ev: pd.DataFrame, ts: pd.Series, sent_campaign: pd.Series, report: ImportReport
) -> pd.Series:
    """Campaign of the member's latest receipt of the same offer at or before each event."""
    left = pd.DataFrame(
        {"pos": np.arange(len(ev)), "ts": ts.to_numpy(), "m": ev["person"], "o": ev["offer"]}
    )
    right = left.assign(c=sent_campaign.to_numpy())[ev["event"].to_numpy() == "sent"]
    right = right.drop(columns="pos")
    m = pd.merge_asof(
        left.sort_values("ts"),
        right.sort_values("ts"),
        on="ts",
        by=["m", "o"],
        direction="backward",
    ).sort_values("pos")
    campaign = pd.Series(m["c"].to_numpy(), index=ev.index)
    orphan = campaign.isna() & (ev["event"] != "sent")
    report.note(
        "offer_events",
        int(orphan.sum()),
        TRANSCRIPT,
        "viewed/redeemed events with no earlier receipt of the offer -> campaign_id null",
    )
    return campaign


def _transactions(tr: pd.DataFrame, members: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """One row per ``transaction`` event: a receipt total, no sku or category."""
    tx = tr[tr["event"] == TRANSACTION_EVENT]
    report.read("transactions", len(tx))
    amount = tx["value.amount"]
    checks = [
        (
            ~tx["person"].isin(members[S.MEMBER_ID]),
            "transactions whose person is not a kept member",
        ),
        (amount.isna(), "transactions without an amount"),
        (amount < 0, "transactions with a negative amount"),
        (tx["time"].isna() | (tx["time"] < 0), "transactions with a missing or negative time"),
    ]
    bad = pd.Series(False, index=tx.index)
    for mask, reason in checks:
        new = mask.fillna(True) & ~bad
        report.rejected("transactions", int(new.sum()), TRANSCRIPT, reason)
        bad |= new
    tx = tx[~bad]
    return pd.DataFrame(
        {
            S.TRANSACTION_ID: _line_ids(tx.index),
            S.MEMBER_ID: tx["person"],
            S.TS: _hours(tx["time"]),
            S.AMOUNT: tx["value.amount"],
        }
    )
