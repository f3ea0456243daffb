"""What each offer, moment, lifecycle stage and campaign earned over the program holdout.

A *unit* is one assignment: a member sent offers at a time (a ``sent`` event, or a store
decision) or held out at that time (``held_out``). Its outcomes are measured over
``window_days`` after the send: conversion (any basket) and spend (sum of basket amounts).

The estimate for a group of treated units (say, the sends of one offer) is a post-stratified
difference in means against the held-out units: strata are campaign x lifecycle stage at the
send x activity in the 90 days before it (0, 1, 2-3, 4-6, 7-11, 12-19, 20+ baskets), the
held-out units of each stratum are weighted to the treated units' share in it, and the variance
is the sum over strata of w^2 (s_t^2 / n_t + s_c^2 / n_c) (a stratum's own sample variance, or
the arm's pooled within-stratum variance where it has one unit). Stratifying matters because
offers are sent to the members eligible for them (onboarding offers to new members, win-back
to lapsing ones), while the holdout is drawn from everyone. Treated units in a stratum with no
held-out unit cannot be compared and are counted in ``n_unmatched``. The 95 % interval is
estimate +- 1.96 se, given only when the group has at least ``MIN_UNITS`` (10) treated and
held-out units.

Money: cost = redemptions x the offer's cost; incremental margin = margin_rate x incremental
spend per unit x treated units; ROI = (incremental margin - cost) / cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "DIMENSIONS",
    "IncrementalityError",
    "ReportInputs",
    "estimate",
    "incrementality",
    "unit_outcomes",
]

Z95 = 1.959963984540054
DIMENSIONS: tuple[str, ...] = ("all", "offer", "moment", "stage", "campaign")
STAGES: tuple[str, ...] = ("onboarding", "active", "lapsing", "lapsed")
ACTIVITY_EDGES = np.array(
    [1, 2, 4, 7, 12, 20]
)  # baskets in the 90 days before: 0 | 1 | 2-3 | ... | 20+
_DAY = 86_400
MIN_UNITS = 10  # treated and held-out units a group needs for an interval


class IncrementalityError(ValueError):
    """Inputs the report cannot use; the message names the table, the column and the value."""


@dataclass(frozen=True)
class ReportInputs:
    """What the estimator reads (canonical columns).

    ``events``: member_id, ts, event (sent / held_out / redeemed; others ignored), offer_id,
    campaign_id (null: the send's decision_id groups it), decision_id.
    ``baskets``: member_id, ts, amount (one row per basket or per line; lines of a transaction
    are summed); None: no purchase data (conversion and spend are not estimated).
    ``offers``: offer_id, cost, and optionally name, kind, moment.
    ``joined``: member_id -> joined_at (for the onboarding stage); may be empty.
    """

    events: pd.DataFrame
    baskets: pd.DataFrame | None
    offers: pd.DataFrame
    joined: pd.Series
    after_seconds: int = 0  # outcomes start this long after the send (store: 1)


def _check(df: pd.DataFrame, table: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise IncrementalityError(f"{table}: missing column(s) {missing}")


def _seconds(ts: pd.Series) -> np.ndarray:
    return pd.to_datetime(ts).to_numpy(dtype="datetime64[s]").astype(np.int64)


def unit_outcomes(
    inputs: ReportInputs,
    window_days: float = 14.0,
    onboarding_days: float = 60.0,
    lapsing_days: float = 45.0,
    lapsed_days: float = 120.0,
) -> pd.DataFrame:
    """One row per (unit, offer) sent and one per held-out unit, with its outcomes.

    Columns: unit (member|campaign), member_id, campaign_id, ts, offer_id (None for the
    holdout), treated, redeemed (0/1, treated rows), converted, spend, stage, activity.
    """
    ev = inputs.events
    _check(ev, "offer_events", ("member_id", "ts", "event", "offer_id"))
    if window_days <= 0 or not math.isfinite(window_days):
        raise IncrementalityError(f"window_days: {window_days} must be a positive number")
    ev = ev.loc[ev["event"].isin(["sent", "held_out", "redeemed"])].copy()
    for col in ("campaign_id", "decision_id"):
        if col not in ev.columns:
            ev[col] = None
    bad = ev["ts"].isna()
    if bad.any():
        raise IncrementalityError(
            f"offer_events.ts: {int(bad.sum())} row(s) without a time, e.g. member "
            f"{ev.loc[bad, 'member_id'].iloc[0]!r}"
        )
    # A send's group: its campaign, else its decision (store decisions carry no campaign).
    ev["campaign_id"] = (
        ev["campaign_id"]
        .astype(object)
        .where(ev["campaign_id"].notna(), ev["decision_id"].astype(object))
    )
    assign = ev.loc[ev["event"] != "redeemed"]
    no_group = assign["campaign_id"].isna()
    if no_group.any():
        raise IncrementalityError(
            f"offer_events: {int(no_group.sum())} sent/held_out row(s) with neither campaign_id "
            f"nor decision_id, e.g. member {assign.loc[no_group, 'member_id'].iloc[0]!r}"
        )
    rows = pd.DataFrame(
        {
            "member_id": assign["member_id"].astype(str).to_numpy(),
            "campaign_id": assign["campaign_id"].astype(str).to_numpy(),
            "ts": pd.to_datetime(assign["ts"]).to_numpy(),
            "offer_id": assign["offer_id"]
            .astype(object)
            .where(assign["event"] == "sent")
            .to_numpy(),
            "treated": (assign["event"] == "sent").to_numpy(),
        }
    )
    rows = rows.drop_duplicates(["member_id", "campaign_id", "offer_id", "treated"])
    rows["unit"] = rows["member_id"] + "|" + rows["campaign_id"]
    # A unit's time is its first assignment row (a decision's offers share it).
    rows["ts"] = rows.groupby("unit")["ts"].transform("min")

    red = ev.loc[ev["event"] == "redeemed", ["member_id", "campaign_id", "offer_id"]]
    red = red.dropna().astype(str).drop_duplicates()
    red["redeemed"] = 1
    rows = rows.merge(red, on=["member_id", "campaign_id", "offer_id"], how="left")
    rows["redeemed"] = rows["redeemed"].fillna(0).astype(np.int64)

    start = _seconds(rows["ts"])
    codes, uniques = pd.factorize(rows["member_id"])
    if inputs.baskets is not None:
        b = inputs.baskets
        _check(b, "transactions", ("member_id", "ts", "amount"))
        no_amounts = bool(b["amount"].isna().all())  # purchases without amounts (store)
        if "transaction_id" in b.columns:
            b = b.groupby("transaction_id", sort=False).agg(
                member_id=("member_id", "first"), ts=("ts", "first"), amount=("amount", "sum")
            )
        bcode = pd.Index(uniques).get_indexer(b["member_id"].astype(str))
        keep = bcode >= 0
        bts = _seconds(b["ts"])[keep]
        bamt = pd.to_numeric(b["amount"]).to_numpy(dtype=float)[keep]
        bcode = bcode[keep].astype(np.int64)
        # One sorted key per basket (member code, then time): windows become two searchsorted.
        offset = int(min(bts.min(), start.min())) if len(bts) else int(start.min())
        span = int(max(bts.max() if len(bts) else 0, start.max()) - offset) + 400 * _DAY
        bkey = bcode * span + (bts - offset)
        order = np.argsort(bkey, kind="stable")
        bkey = bkey[order]
        cum = np.concatenate([[0.0], np.cumsum(bamt[order])])
        ukey = codes.astype(np.int64) * span + (start - offset)
        lo = np.searchsorted(bkey, ukey + inputs.after_seconds, side="left")
        hi = np.searchsorted(bkey, ukey + int(window_days * _DAY), side="left")
        rows["converted"] = (hi > lo).astype(np.int64)
        rows["spend"] = np.nan if no_amounts else cum[hi] - cum[lo]
        before = np.searchsorted(bkey, ukey - 90 * _DAY, side="left")
        activity = lo - before
        has_last = (lo > 0) & (bkey[np.maximum(lo - 1, 0)] >= codes.astype(np.int64) * span)
        last = np.where(has_last, bkey[np.maximum(lo - 1, 0)] - codes.astype(np.int64) * span, -1)
        days_since = np.where(has_last, (start - offset - last) / _DAY, np.inf)
        stage = np.where(
            days_since <= lapsing_days,
            "active",
            np.where(days_since <= lapsed_days, "lapsing", "lapsed"),
        ).astype(object)
    else:
        rows["converted"] = np.nan
        rows["spend"] = np.nan
        activity = np.zeros(len(rows), dtype=np.int64)
        stage = np.full(len(rows), "unknown", dtype=object)
    if len(inputs.joined):
        joined = inputs.joined.copy()
        joined.index = joined.index.astype(str)
        j = pd.to_datetime(joined.reindex(rows["member_id"]).to_numpy())
        tenure = (rows["ts"].to_numpy() - j) / np.timedelta64(1, "D")
        stage = np.where(np.asarray(tenure < onboarding_days, dtype=bool), "onboarding", stage)
    rows["stage"] = stage
    rows["activity"] = np.searchsorted(ACTIVITY_EDGES, activity, side="right")
    return rows


def _stratified(
    t: pd.DataFrame, c: pd.DataFrame, col: str
) -> tuple[float, float, float, float, int, int, int]:
    """(diff, se, mean treated, mean control (reweighted), n treated used, n control used,
    n treated unmatched) of ``col`` over strata (t and c carry a ``stratum`` column)."""
    t, c = t.loc[t[col].notna()], c.loc[c[col].notna()]  # no amounts: nothing to compare
    gt = t.groupby("stratum")[col].agg(["count", "mean", "var"])
    gc = c.groupby("stratum")[col].agg(["count", "mean", "var"])
    m = gt.merge(gc, left_index=True, right_index=True, suffixes=("_t", "_c"), how="inner")
    unmatched = int(gt["count"].sum() - m["count_t"].sum())
    if m.empty:
        return (math.nan, math.nan, math.nan, math.nan, 0, 0, unmatched)
    pooled_t = _pooled(t, col)
    pooled_c = _pooled(c, col)
    var_t = m["var_t"].where(m["count_t"] > 1, pooled_t).fillna(0.0)
    var_c = m["var_c"].where(m["count_c"] > 1, pooled_c).fillna(0.0)
    n_t = m["count_t"].to_numpy(dtype=float)
    w = n_t / n_t.sum()
    mean_t = float(np.sum(w * m["mean_t"]))
    mean_c = float(np.sum(w * m["mean_c"]))
    var = float(np.sum(w**2 * (var_t / m["count_t"] + var_c / m["count_c"])))
    return (
        mean_t - mean_c,
        math.sqrt(var),
        mean_t,
        mean_c,
        int(n_t.sum()),
        int(m["count_c"].sum()),
        unmatched,
    )


def _pooled(df: pd.DataFrame, col: str) -> float:
    dev = df[col] - df.groupby("stratum")[col].transform("mean")
    dof = len(df) - df["stratum"].nunique()
    return float((dev**2).sum() / dof) if dof > 0 else math.nan


def _ci(x: float, se: float) -> list[float | None]:
    if not (math.isfinite(x) and math.isfinite(se)):
        return [None, None]
    return [x - Z95 * se, x + Z95 * se]


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def estimate(
    treated: pd.DataFrame, control: pd.DataFrame, costs: pd.Series, margin_rate: float
) -> dict[str, object]:
    """The figures of one group: ``treated`` rows (one per unit and offer sent) against the
    held-out units ``control`` (both from :func:`unit_outcomes` with a ``stratum`` column)."""
    units = treated.drop_duplicates("unit")  # a unit counts once in conversion and spend
    conv = _stratified(units, control, "converted")
    spend = _stratified(units, control, "spend")
    if conv[4] < MIN_UNITS or conv[5] < MIN_UNITS:  # a variance from a handful is no interval
        conv = (*conv[:1], math.nan, *conv[2:])
        spend = (*spend[:1], math.nan, *spend[2:])
    n_sent = len(treated)
    redemptions = int(treated["redeemed"].sum())
    cost = float((treated["redeemed"] * treated["offer_id"].map(costs).fillna(0.0)).sum())
    n_used = conv[4]
    margin = margin_rate * spend[0] * n_used
    margin_ci = [None if v is None else margin_rate * v * n_used for v in _ci(spend[0], spend[1])]
    roi = (margin - cost) / cost if cost > 0 else math.nan
    roi_ci = [None if v is None or cost <= 0 else (v - cost) / cost for v in margin_ci]
    return {
        "n_treated": len(units),
        "n_sent": n_sent,
        "n_control": conv[5],
        "n_unmatched": conv[6],
        "conversion_treated": _num(conv[2]),
        "conversion_control": _num(conv[3]),
        "diff_conversion": _num(conv[0]),
        "se_conversion": _num(conv[1]),
        "ci_conversion": _ci(conv[0], conv[1]),
        "spend_treated": _num(spend[2]),
        "spend_control": _num(spend[3]),
        "diff_spend": _num(spend[0]),
        "se_spend": _num(spend[1]),
        "ci_spend": _ci(spend[0], spend[1]),
        "redemptions": redemptions,
        "redemption_rate": redemptions / n_sent if n_sent else None,
        "cost": cost,
        "incremental_margin": _num(margin),
        "ci_incremental_margin": margin_ci,
        "roi": _num(roi),
        "ci_roi": roi_ci,
    }


def incrementality(
    inputs: ReportInputs,
    window_days: float = 14.0,
    margin_rate: float = 0.30,
    dimensions: tuple[str, ...] = DIMENSIONS,
    units: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (dimension, group) with the figures of :func:`estimate`.

    Dimensions: ``all``; ``offer``; ``moment`` (each surprise moment of the catalog, and
    ``regular`` for offers without one); ``stage`` (lifecycle stage at the send); ``campaign``.
    ``units`` (from :func:`unit_outcomes`) skips recomputing the outcomes.
    """
    if not 0 <= margin_rate <= 1:
        raise IncrementalityError(f"margin_rate: {margin_rate} is not within [0, 1]")
    unknown = sorted(set(dimensions) - set(DIMENSIONS))
    if unknown:
        raise IncrementalityError(f"dimensions: {unknown} not among {list(DIMENSIONS)}")
    offers = inputs.offers
    _check(offers, "offers", ("offer_id", "cost"))
    u = units if units is not None else unit_outcomes(inputs, window_days)
    u = u.copy()
    u["stratum"] = u["campaign_id"] + "|" + u["stage"].astype(str) + "|" + u["activity"].astype(str)
    moments = offers.set_index("offer_id")["moment"] if "moment" in offers.columns else None
    u["moment"] = u["offer_id"].map(moments).fillna("regular") if moments is not None else "regular"
    costs = offers.set_index("offer_id")["cost"].astype(float)
    control = u.loc[~u["treated"]]
    treated = u.loc[u["treated"]]
    names = offers.set_index("offer_id")["name"] if "name" in offers.columns else None
    out = []
    for dim in dimensions:
        if dim == "all":
            groups = [("all", treated)]
        else:
            key = {"offer": "offer_id", "moment": "moment", "stage": "stage"}.get(dim, dim + "_id")
            groups = list(treated.groupby(key, sort=True))
        for name, t in groups:
            row: dict[str, object] = {"dimension": dim, "group": str(name)}
            if dim == "offer" and names is not None:
                row["name"] = str(names.get(name, name))
            row.update(estimate(t, control, costs, margin_rate))
            out.append(row)
    return pd.DataFrame(out)
