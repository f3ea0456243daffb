"""Aggregations of a member's history before each (member_id, as_of) pair.

Each function takes ``keys`` (distinct ``member_id, as_of`` rows) and returns one row per key
that has any visible history, with raw aggregates (``_``-prefixed internals are turned into
features by ``features.pipeline.member``). Visibility is always ``ts < as_of`` of the key's own
row, so one query serves one as_of or millions of different ones.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from features import schema as S
from features.config import FeatureConfig
from features.pipeline.exprs import DAY_S, WEEK_S, epoch_s, to_units

__all__ = [
    "AS_OF",
    "KEYS",
    "baskets",
    "category_spend",
    "offer_history",
    "purchase_history",
    "purchase_streak",
    "visible_lines",
]

AS_OF = "as_of"
KEYS = [S.MEMBER_ID, AS_OF]
# Offer events that count as a member's response history (held_out is not an offer received).
SENT, VIEWED, REDEEMED, DISMISSED = "sent", "viewed", "redeemed", "dismissed"


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
    in_window = ibis.literal(True)
    if config.category_window_days is not None:
        in_window = lines.age_s <= config.category_window_days * DAY_S
    cats = list(config.categories or ())
    per_cat = {
        f"_cat{i}": lines.units.sum(where=in_window & (lines[S.CATEGORY] == c))
        for i, c in enumerate(cats)
    }
    is_other = lines[S.CATEGORY].isnull()
    if cats:
        is_other = is_other | ~lines[S.CATEGORY].isin(cats)
    return lines.group_by(KEYS).aggregate(
        **per_cat, _cat_other=lines.units.sum(where=in_window & is_other)
    )


def baskets(lines: ir.Table) -> ir.Table:
    """One row per (key, transaction_id): the first timestamp of the basket's visible lines,
    its age in whole seconds and its total in money units."""
    b = lines.group_by([*KEYS, S.TRANSACTION_ID]).aggregate(
        ts=lines[S.TS].min(), units=lines.units.sum()
    )
    return b.mutate(age_s=epoch_s(b[AS_OF]) - epoch_s(b.ts))


def purchase_history(b: ir.Table, config: FeatureConfig) -> ir.Table:
    """Per key: purchase counts and spend in money units (all time and per window), first/last
    purchase age and spend in the tier window."""
    aggs: dict[str, ir.Value] = {
        "n_purchases_total": b.age_s.count(),
        "spend_total": b.units.sum(),
        "_last_age_s": b.age_s.min(),
        "_first_age_s": b.age_s.max(),
        "_tier_spend": b.units.sum(where=b.age_s <= config.tier_window_days * DAY_S),
    }
    for w in config.windows_days:
        aggs[f"n_purchases_{w}d"] = b.age_s.count(where=b.age_s <= w * DAY_S)
        aggs[f"spend_{w}d"] = b.units.sum(where=b.age_s <= w * DAY_S)
    return b.group_by(KEYS).aggregate(**aggs)


def purchase_streak(b: ir.Table, config: FeatureConfig) -> ir.Table:
    """Per key: the number of consecutive ISO weeks (Monday to Sunday) with a purchase, counting
    back from the week before the week of as_of (capped at ``streak_max_weeks``)."""
    weeks_ago = ((epoch_s(b[AS_OF].truncate("W")) - epoch_s(b.ts.truncate("W"))) / WEEK_S).round()
    w = b.select(*KEYS, weeks_ago=weeks_ago.cast("int64"))
    w = w.filter((w.weeks_ago >= 1) & (w.weeks_ago <= config.streak_max_weeks)).distinct()
    # Bit k-1 set <=> a purchase k weeks before the current week. The streak is the number of
    # trailing one bits: (mask + 1) & ~mask isolates the lowest zero bit, 2 ** streak.
    # (A sum over distinct weeks, as bit_or is not available on every backend.)
    bit = (ibis.literal(2, type="int64") ** (w.weeks_ago - 1)).cast("int64")
    m = w.group_by(KEYS).aggregate(_mask=bit.sum())
    lowest_zero = (m._mask + 1) & ~m._mask
    return m.select(*KEYS, purchase_streak_weeks=lowest_zero.log2().round().cast("int64"))


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
        "offers_received": v.age_s.count(where=v[S.EVENT] == SENT),
        "offers_viewed": v.age_s.count(where=v[S.EVENT] == VIEWED),
        "offers_redeemed": v.age_s.count(where=v[S.EVENT] == REDEEMED),
        "offers_dismissed": v.age_s.count(where=v[S.EVENT] == DISMISSED),
        "_last_offer_age_s": v.age_s.min(where=v[S.EVENT] == SENT),
        "_bonus_value": to_units(v[S.REWARD_VALUE]).sum(where=bonus),
    }
    for kind in config.offer_kinds:
        is_kind = v[S.KIND] == kind
        aggs[f"received_{kind}"] = v.age_s.count(where=is_kind & (v[S.EVENT] == SENT))
        aggs[f"viewed_{kind}"] = v.age_s.count(where=is_kind & (v[S.EVENT] == VIEWED))
        aggs[f"redeemed_{kind}"] = v.age_s.count(where=is_kind & (v[S.EVENT] == REDEEMED))
    return v.group_by(KEYS).aggregate(**aggs)
