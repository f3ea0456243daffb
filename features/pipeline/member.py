"""Member features as of each (member_id, as_of) pair: one Ibis expression for every backend.

``member_feature_table`` is the single definition; ``features.pipeline.pit`` feeds it one
as_of for every member (``member_features``) or one per pair (``features_at``), and
``features.pipeline.online`` feeds it one member. Feature semantics are documented in
docs/features.md.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from features.pipeline.config import FeatureConfig
from features.pipeline.exprs import (
    DAY_S,
    days_between,
    from_units,
    next_annual_date,
    safe_div,
)
from features.pipeline.history import (
    AS_OF,
    KEYS,
    baskets,
    category_spend,
    offer_history,
    purchase_history,
    visible_lines,
)
from features.pipeline.tables import FeatureTables
from features.sources import schema as S

__all__ = ["member_feature_table"]


def member_feature_table(
    tables: FeatureTables,
    base: ir.Table,
    config: FeatureConfig,
    horizon: ir.Value | None = None,
) -> ir.Table:
    """Features of every row of ``base``: distinct (member_id, as_of) pairs joined with the
    member's ``members`` row, restricted to members who joined before as_of.

    ``horizon`` (optional) is a constant upper bound on every as_of, used only to prune rows
    early; it never changes the result.
    """
    if config.categories is None:
        raise ValueError("config.categories is not resolved; call resolve_categories first")
    keys = base.select(*KEYS)
    lines = visible_lines(keys, tables.transactions, horizon)
    b = baskets(lines)
    purchases = purchase_history(b, config)
    categories = category_spend(lines, config)
    offers = offer_history(keys, tables.offer_events, tables.offers, config, horizon)

    def on(right: ir.Table) -> list[ir.BooleanValue]:
        return [base[k] == right[k] for k in KEYS]

    joined = (
        base.left_join(purchases, on(purchases))
        .left_join(categories, on(categories))
        .left_join(offers, on(offers))
        .select(
            base,
            *[purchases[c] for c in purchases.columns if c not in KEYS],
            *[categories[c] for c in categories.columns if c not in KEYS],
            *[offers[c] for c in offers.columns if c not in KEYS],
        )
    )
    return _derive(_intermediates(joined, config), config)


def _intermediates(j: ir.Table, config: FeatureConfig) -> ir.Table:
    """Values several features share, computed once (keeps the generated SQL small)."""
    points = _money(j._tier_spend) * config.points_per_currency_unit
    if config.history_start is not None:
        start = ibis.literal(config.history_start, type="timestamp")
        covered = ibis.least(
            ibis.greatest(days_between(j[AS_OF], start), 1.0), float(config.tier_window_days)
        )
        points = points * float(config.tier_window_days) / covered
    today = j[AS_OF].date()
    birth, joined = j[S.BIRTH_DATE], j[S.JOINED_AT]
    cat_total = j._cat_other.fill_null(0)
    for i in range(len(config.categories or ())):
        cat_total = cat_total + j[f"_cat{i}"].fill_null(0)
    return j.mutate(
        _cat_total=cat_total,
        _tenure=days_between(j[AS_OF], joined),
        _recency=j._last_age_s.cast("float64") / float(DAY_S),
        _n_total=_count(j.n_purchases_total),
        _points=points,
        _today=today,
        _next_bday=next_annual_date(today, birth.month(), birth.day()),
        _next_anniv=next_annual_date(today, joined.month(), joined.day(), after_year=joined.year()),
    )


def _derive(j: ir.Table, config: FeatureConfig) -> ir.Table:
    """The feature columns (in output order) from the joined raw aggregates."""
    out: dict[str, ir.Value] = {}
    out.update(_profile(j))
    out.update(_tenure_and_rfm(j, config))
    out.update(_tier(j, config))
    out.update(_category_shares(j, config))
    out.update(_offer_response(j, config))
    out.update(_calendar(j))
    out["purchase_streak_weeks"] = _streak(j._week_mask)
    out.update(_milestones(j._n_total, config))
    return j.select(*KEYS, **out)


def _count(x: ir.Value) -> ir.Value:
    return x.fill_null(0).cast("int64")


def _money(units: ir.Value) -> ir.Value:
    """Currency amount of a sum of money units; 0 where there was nothing to sum."""
    return from_units(units).fill_null(0.0)


def _profile(j: ir.Table) -> dict[str, ir.Value]:
    return {
        "gender": j[S.GENDER],
        "income": j[S.INCOME],
        "region": j[S.REGION],
        "segment": j[S.SEGMENT],
        # consent, for the decision (not a model feature: training leaves these out)
        S.EMAIL_OPT_IN: j[S.EMAIL_OPT_IN],
        S.APP_OPT_IN: j[S.APP_OPT_IN],
    }


def _tenure_and_rfm(j: ir.Table, config: FeatureConfig) -> dict[str, ir.Value]:
    tenure, recency = j._tenure, j._recency
    inactive = recency.fill_null(tenure)  # never bought: inactive since joining
    stage = ibis.cases(
        (tenure < config.onboarding_days, "onboarding"),
        (inactive > config.lapsed_days, "lapsed"),
        (inactive > config.lapsing_days, "lapsing"),
        else_="active",
    )
    out: dict[str, ir.Value] = {
        "tenure_days": tenure,
        "lifecycle_stage": stage,
        "days_since_last_purchase": recency,
        "days_since_first_purchase": j._first_age_s.cast("float64") / float(DAY_S),
        "n_purchases_total": j._n_total,
        "spend_total": _money(j.spend_total),
    }
    for w in config.windows_days:
        out[f"n_purchases_{w}d"] = _count(j[f"n_purchases_{w}d"])
        out[f"spend_{w}d"] = _money(j[f"spend_{w}d"])
    out["avg_basket"] = safe_div(from_units(j.spend_total), j.n_purchases_total)
    return out


def _tier(j: ir.Table, config: FeatureConfig) -> dict[str, ir.Value]:
    points = j._points
    ladder = config.tier_ladder
    top_down = list(reversed(list(enumerate(ladder))))
    tier = ibis.cases(
        *[(points >= need, name) for _, (name, need) in top_down[:-1]], else_=ladder[0][0]
    )
    rank = ibis.cases(*[(points >= need, i) for i, (_, need) in top_down[:-1]], else_=0)
    nxt = ibis.cases(
        *[(points < need, name) for name, need in ladder[1:]], else_=ibis.null("string")
    )
    to_next = ibis.cases(
        *[(points < need, need - points) for _, need in ladder[1:]], else_=ibis.null("float64")
    )
    return {
        "points_tier_window": points,
        "tier": tier,
        "tier_rank": rank.cast("int64"),
        "next_tier": nxt,
        "points_to_next_tier": to_next.cast("float64"),
        "points_balance": _money(j.spend_total) * config.points_per_currency_unit
        + _money(j._bonus_value) * config.points_per_bonus_unit,
    }


def _category_shares(j: ir.Table, config: FeatureConfig) -> dict[str, ir.Value]:
    n = len(config.categories or ())
    parts = [j[f"_cat{i}"].fill_null(0) for i in range(n)] + [j._cat_other.fill_null(0)]
    cols = [*config.category_columns.values(), "share_other"]
    return {col: safe_div(p, j._cat_total) for col, p in zip(cols, parts, strict=True)}


def _offer_response(j: ir.Table, config: FeatureConfig) -> dict[str, ir.Value]:
    received = _count(j.offers_received)
    viewed = _count(j.offers_viewed)
    redeemed = _count(j.offers_redeemed)
    out: dict[str, ir.Value] = {
        "offers_received": received,
        "offers_viewed": viewed,
        "offers_redeemed": redeemed,
        "offers_dismissed": _count(j.offers_dismissed),
        "offer_view_rate": safe_div(viewed, received),
        "offer_redemption_rate": safe_div(redeemed, received),
        "days_since_last_offer": j._last_offer_age_s.cast("float64") / float(DAY_S),
    }
    for kind in config.offer_kinds:
        r, v, d = (_count(j[f"{e}_{kind}"]) for e in ("received", "viewed", "redeemed"))
        out[f"received_{kind}"] = r
        out[f"viewed_{kind}"] = v
        out[f"redeemed_{kind}"] = d
        out[f"view_rate_{kind}"] = safe_div(v, r)
        out[f"redemption_rate_{kind}"] = safe_div(d, r)
    return out


def _calendar(j: ir.Table) -> dict[str, ir.Value]:
    today, birth, joined = j._today, j[S.BIRTH_DATE], j[S.JOINED_AT]
    next_bday, next_anniv = j._next_bday, j._next_anniv
    to_bday = next_bday.delta(today, unit="day")
    to_anniv = next_anniv.delta(today, unit="day")
    # Completed years: the year of the next occurrence, minus one unless it is today.
    age_years = next_bday.year() - birth.year() - ibis.ifelse(to_bday == 0, 0, 1)
    member_years = next_anniv.year() - joined.year() - ibis.ifelse(to_anniv == 0, 0, 1)
    return {
        "age": age_years.cast("float64").fill_null(j[S.AGE]),
        "days_to_birthday": to_bday.cast("int64"),
        "days_to_anniversary": to_anniv.cast("int64"),
        "membership_years": member_years.cast("int64"),
    }


def _streak(mask: ir.IntegerValue) -> ir.IntegerValue:
    """Consecutive active weeks right before the current one: the number of trailing one bits
    of the week mask. ``(mask + 1) & ~mask`` isolates the lowest zero bit, 2 ** streak."""
    m = mask.fill_null(0)
    return ((m + 1) & ~m).log2().round().cast("int64")


def _milestones(n: ir.IntegerValue, config: FeatureConfig) -> dict[str, ir.Value]:
    ms = config.milestones
    last = ibis.cases(*[(n >= m, m) for m in reversed(ms)], else_=0)
    nxt = ibis.cases(*[(n < m, m) for m in ms], else_=ibis.null("int64"))
    return {
        "last_milestone": last.cast("int64"),
        "next_milestone": nxt.cast("int64"),
        "purchases_to_next_milestone": (nxt - n).cast("int64"),
    }
