"""Aggregations of a member's history before each (member_id, as_of) pair.

Each function takes ``keys`` (distinct ``member_id, as_of`` rows) and returns one row per key
that has any visible history, with raw aggregates (``_``-prefixed internals are turned into
features by ``features.pipeline.member``). Visibility is always ``ts < as_of`` of the key's own
row, so one query serves one as_of or millions of different ones.
"""

from __future__ import annotations

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from features.pipeline.config import FeatureConfig
from features.pipeline.exprs import DAY_S, epoch_s, to_units, week_index
from features.sources import schema as S

__all__ = [
    "AS_OF",
    "KEYS",
    "baskets",
    "category_spend",
    "offer_history",
    "purchase_history",
    "visible_lines",
]

AS_OF = "as_of"
KEYS = [S.MEMBER_ID, AS_OF]
# Offer events that count as a member's response history (held_out is not an offer received).
SENT, VIEWED, REDEEMED, DISMISSED = "sent", "viewed", "redeemed", "dismissed"


@ibis.udf.agg.builtin(name="bit_or")
def _bit_or(x: dt.int64) -> dt.int64:
    """Bitwise OR of the group's values (SQL ``bit_or``: DuckDB and Spark have it)."""


def _sum_if(cond: ir.BooleanValue, value: ir.NumericValue) -> ir.NumericValue:
    """Sum of ``value`` over rows where ``cond`` holds (a CASE inside SUM: much faster than a
    FILTER clause on DuckDB when there are many of them; 0 rather than null when none)."""
    return ibis.ifelse(cond, value, 0).sum()


def _count_if(cond: ir.BooleanValue) -> ir.IntegerValue:
    return ibis.ifelse(cond, 1, 0).sum()


def _visible(keys: ir.Table, t: ir.Table, cols: list[str]) -> ir.Table:
    """Rows of ``t`` of each key's member strictly before the key's as_of, with ``age_s``."""
    j = keys.join(t, [keys[S.MEMBER_ID] == t[S.MEMBER_ID], t[S.TS] < keys[AS_OF]])
    j = j.select(keys[S.MEMBER_ID], keys[AS_OF], *[t[c] for c in cols])
    return j.mutate(age_s=epoch_s(j[AS_OF]) - epoch_s(j[S.TS]))


def visible_lines(
    keys: ir.Table,
    transactions: ir.Table,
    horizon: ir.Value | None = None,
) -> ir.Table:
    """Basket lines of each key's member strictly before the key's as_of."""
    t = transactions
    if horizon is not None:  # a constant as_of: let the backend prune early
        t = t.filter(t[S.TS] < horizon)
    lines = _visible(keys, t, [S.TRANSACTION_ID, S.TS, S.AMOUNT, S.CATEGORY])
    return lines.mutate(units=to_units(lines[S.AMOUNT]))


def category_spend(lines: ir.Table, config: FeatureConfig) -> ir.Table:
    """Per key: spend (in money units) per configured category (``_cat<i>``) and on any other
    or no category (``_cat_other``), over lines in the category window."""
    units = lines.units
    if config.category_window_days is not None:
        units = ibis.ifelse(lines.age_s <= config.category_window_days * DAY_S, units, 0)
    w = lines.select(*KEYS, S.CATEGORY, units=units)
    cats = list(config.categories or ())
    per_cat = {f"_cat{i}": _sum_if(w[S.CATEGORY] == c, w.units) for i, c in enumerate(cats)}
    is_other = w[S.CATEGORY].isnull()
    if cats:
        is_other = is_other | ~w[S.CATEGORY].isin(cats)
    return w.group_by(KEYS).aggregate(**per_cat, _cat_other=_sum_if(is_other, w.units))


def baskets(lines: ir.Table) -> ir.Table:
    """One row per (key, transaction_id): the first timestamp of the basket's visible lines,
    its age in whole seconds, how many ISO weeks before the week of as_of it falls (0: the
    same week) and its total in money units."""
    b = lines.group_by([*KEYS, S.TRANSACTION_ID]).aggregate(
        ts=lines[S.TS].min(), units=lines.units.sum()
    )
    asof_s, ts_s = epoch_s(b[AS_OF]), epoch_s(b.ts)
    return b.mutate(age_s=asof_s - ts_s, weeks_ago=week_index(asof_s) - week_index(ts_s))


def purchase_history(b: ir.Table, config: FeatureConfig) -> ir.Table:
    """Per key: purchase counts and spend in money units (all time and per window), first/last
    purchase age, spend in the tier window and the mask of active weeks (``_week_mask``: bit
    k-1 set when a purchase falls k ISO weeks before the week of as_of, k <= streak_max_weeks;
    see ``member._streak``)."""
    in_streak = (b.weeks_ago >= 1) & (b.weeks_ago <= config.streak_max_weeks)
    bit = (ibis.literal(2, type="int64") ** (b.weeks_ago - 1)).cast("int64")
    aggs: dict[str, ir.Value] = {
        "n_purchases_total": b.age_s.count(),
        "spend_total": b.units.sum(),
        "_last_age_s": b.age_s.min(),
        "_first_age_s": b.age_s.max(),
        "_tier_spend": _sum_if(b.age_s <= config.tier_window_days * DAY_S, b.units),
        "_week_mask": _bit_or(ibis.ifelse(in_streak, bit, 0)),
    }
    for w in config.windows_days:
        aggs[f"n_purchases_{w}d"] = _count_if(b.age_s <= w * DAY_S)
        aggs[f"spend_{w}d"] = _sum_if(b.age_s <= w * DAY_S, b.units)
    return b.group_by(KEYS).aggregate(**aggs)


def offer_history(
    keys: ir.Table,
    offer_events: ir.Table,
    offers: ir.Table,
    config: FeatureConfig,
    horizon: ir.Value | None = None,
) -> ir.Table:
    """Per key: offers sent, viewed, redeemed and dismissed (overall and per offer kind) and the
    age of the last sent offer, and the reward value of redeemed bonus_points offers."""
    e = offer_events.filter(offer_events[S.EVENT].isin([SENT, VIEWED, REDEEMED, DISMISSED]))
    if horizon is not None:
        e = e.filter(e[S.TS] < horizon)
    kinds = offers.select(S.OFFER_ID, S.KIND, S.REWARD_VALUE)
    e = e.left_join(kinds, e[S.OFFER_ID] == kinds[S.OFFER_ID]).select(
        e[S.MEMBER_ID], e[S.TS], e[S.EVENT], kinds[S.KIND], kinds[S.REWARD_VALUE]
    )
    v = _visible(keys, e, [S.TS, S.EVENT, S.KIND, S.REWARD_VALUE])
    bonus = (v[S.EVENT] == REDEEMED) & (v[S.KIND] == "bonus_points")
    aggs: dict[str, ir.Value] = {
        "offers_received": _count_if(v[S.EVENT] == SENT),
        "offers_viewed": _count_if(v[S.EVENT] == VIEWED),
        "offers_redeemed": _count_if(v[S.EVENT] == REDEEMED),
        "offers_dismissed": _count_if(v[S.EVENT] == DISMISSED),
        "_last_offer_age_s": v.age_s.min(where=v[S.EVENT] == SENT),
        "_bonus_value": _sum_if(bonus, to_units(v[S.REWARD_VALUE])),
    }
    for kind in config.offer_kinds:
        is_kind = v[S.KIND] == kind
        aggs[f"received_{kind}"] = _count_if(is_kind & (v[S.EVENT] == SENT))
        aggs[f"viewed_{kind}"] = _count_if(is_kind & (v[S.EVENT] == VIEWED))
        aggs[f"redeemed_{kind}"] = _count_if(is_kind & (v[S.EVENT] == REDEEMED))
    return v.group_by(KEYS).aggregate(**aggs)
