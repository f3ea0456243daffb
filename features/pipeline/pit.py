"""Point-in-time entry points: features of all members at one as_of, or of (member, time) pairs.

Both go through ``member_feature_table`` (one definition): ``member_features`` is the special
case of ``features_at`` where every member gets the same as_of.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any, TypeAlias

import ibis
import ibis.expr.types as ir
import pandas as pd
from ibis.backends import BaseBackend

from features.pipeline.config import FeatureConfig
from features.pipeline.history import AS_OF
from features.pipeline.member import member_feature_table
from features.pipeline.tables import (
    FeatureInputError,
    FeatureTables,
    load_tables,
)
from features.sources import schema as S

__all__ = [
    "as_tables",
    "features_at",
    "member_features",
    "offer_features",
    "resolve_categories",
    "to_naive_utc",
    "to_timestamp",
]

log = logging.getLogger(__name__)

TablesLike: TypeAlias = FeatureTables | BaseBackend | Path | str


def as_tables(source: TablesLike) -> FeatureTables:
    """``FeatureTables`` from tables, a backend holding tables named after the canonical tables,
    or a data directory (opened with DuckDB)."""
    if isinstance(source, FeatureTables):
        return source
    if isinstance(source, (Path, str)):
        return load_tables(source)
    if isinstance(source, BaseBackend):
        names = set(source.list_tables())
        missing = [
            t for t in ("members", "offers", "transactions", "offer_events") if t not in names
        ]
        if missing:
            raise FeatureInputError(f"backend {source.name}: table(s) {missing} not found")
        return FeatureTables(
            **{t: source.table(t) for t in ("members", "offers", "transactions", "offer_events")}
        )
    raise FeatureInputError(f"cannot read canonical tables from {type(source).__name__}")


def to_timestamp(value: Any) -> dt.datetime:
    """A naive UTC ``datetime`` from a date, datetime or ISO string (tz-aware is converted)."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise FeatureInputError(f"as_of: cannot read {value!r} as a timestamp") from exc
    if pd.isna(ts):
        raise FeatureInputError(f"as_of: {value!r} is not a timestamp")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def to_naive_utc(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC ``datetime64[us]`` (ISO-8601 strings of mixed precision, dates,
    tz-aware values converted to UTC); unreadable values become NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values
    else:
        ts = pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.astype("datetime64[us]")


def resolve_categories(
    source: TablesLike, config: FeatureConfig, before: Any | None = None
) -> FeatureConfig:
    """``config`` with an explicit category list: unchanged if it has one, else the
    ``max_categories`` categories with the most spend in transactions before ``before``
    (ties by name), sorted by name so the output schema is stable."""
    if config.categories is not None:
        return config
    t = as_tables(source).transactions
    if before is not None:
        t = t.filter(t[S.TS] < ibis.literal(to_timestamp(before)))
    t = t.filter(t[S.CATEGORY].notnull())
    top = (
        t.group_by(S.CATEGORY)
        .aggregate(spend=t[S.AMOUNT].sum())
        .order_by([ibis.desc("spend"), S.CATEGORY])
        .limit(config.max_categories)
    )
    cats = sorted(str(c) for c in top.execute()[S.CATEGORY])
    log.info("resolved %d categories: %s", len(cats), cats)
    return config.model_copy(update={"categories": tuple(cats)})


def member_features(
    source: TablesLike, as_of: Any, config: FeatureConfig | None = None
) -> ir.Table:
    """Features of every member who joined before ``as_of``, from events strictly before it.

    Members who joined on or after ``as_of`` are not in the result (they were not members yet).
    """
    tables = as_tables(source)
    config = resolve_categories(tables, config or FeatureConfig(), before=as_of)
    when = ibis.literal(to_timestamp(as_of), type="timestamp")
    m = tables.members
    base = m.filter(m[S.JOINED_AT] < when).mutate(**{AS_OF: when})
    base = base.select(S.MEMBER_ID, AS_OF, *[c for c in m.columns if c != S.MEMBER_ID])
    return member_feature_table(tables, base, config, horizon=when)


def features_at(
    source: TablesLike,
    pairs: ir.Table | pd.DataFrame,
    config: FeatureConfig | None = None,
    time_col: str = AS_OF,
) -> ir.Table:
    """Member features of each (member_id, ``time_col``) pair as of that pair's own time.

    One row per distinct pair whose member exists and joined before the pair's time (other
    pairs are dropped); the time column of the result is named ``time_col``. One query for all
    pairs: history rows join their pairs on member_id with ``ts < time`` and are aggregated per
    pair.
    """
    tables = as_tables(source)
    pairs = _pairs_table(pairs, time_col)
    if config is None or config.categories is None:
        latest = pairs[AS_OF].max().execute()
        config = resolve_categories(tables, config or FeatureConfig(), before=latest)
    m = tables.members
    base = pairs.join(m, pairs[S.MEMBER_ID] == m[S.MEMBER_ID]).filter(m[S.JOINED_AT] < pairs[AS_OF])
    base = base.select(
        pairs[S.MEMBER_ID], pairs[AS_OF], *[m[c] for c in m.columns if c != S.MEMBER_ID]
    )
    out = member_feature_table(tables, base, config)
    return out.rename({time_col: AS_OF}) if time_col != AS_OF else out


def _pairs_table(pairs: ir.Table | pd.DataFrame, time_col: str) -> ir.Table:
    cols = list(pairs.columns)
    for need in (S.MEMBER_ID, time_col):
        if need not in cols:
            raise FeatureInputError(f"pairs: column '{need}' missing (have {cols})")
    if isinstance(pairs, pd.DataFrame):
        frame = pd.DataFrame(
            {
                S.MEMBER_ID: pairs[S.MEMBER_ID].astype("str"),
                AS_OF: to_naive_utc(pairs[time_col]),
            }
        )
        if frame[AS_OF].isna().any():
            bad = frame.index[frame[AS_OF].isna()][:5].tolist()
            raise FeatureInputError(f"pairs: null or unreadable '{time_col}' in rows {bad}")
        return ibis.memtable(frame.drop_duplicates().reset_index(drop=True))
    p = pairs.select(
        pairs[S.MEMBER_ID].cast("string").name(S.MEMBER_ID),
        pairs[time_col].cast("timestamp").name(AS_OF),
    )
    return p.distinct()


def offer_features(source: TablesLike | ir.Table) -> ir.Table:
    """Static features of every offer in the catalog (see docs/features.md)."""
    o = source if isinstance(source, ir.Table) else as_tables(source).offers
    cost = o[S.COST].cast("float64")
    return o.select(
        o[S.OFFER_ID],
        offer_kind=o[S.KIND],
        offer_value=o[S.REWARD_VALUE].cast("float64"),
        offer_cost=cost,
        offer_value_cost_ratio=o[S.REWARD_VALUE].cast("float64") / cost.nullif(0.0),
        offer_zero_cost=cost == 0.0,
        offer_min_spend=o[S.MIN_SPEND].cast("float64").fill_null(0.0),
        offer_category=o[S.CATEGORY],
        offer_duration_days=o[S.DURATION_DAYS].cast("float64"),
    )
