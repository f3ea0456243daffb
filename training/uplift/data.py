"""Uplift training sets from past campaigns: one row per send or control member, at its time.

For every ``sent`` event (a treated row) and every ``held_out`` event (a control row: a member
of a campaign's control group, logged at the send time) in ``offer_events``:

* **features**: the member's features as of the row's time ``ts``, from the feature pipeline's
  point-in-time function (``features.pipeline.features_at``), one query for all rows: only
  transactions and offer events strictly before ``ts`` are visible. Rows whose member had not
  joined before ``ts`` are dropped (counted in ``dropped``);
* **outcomes** in the window ``(ts, ts + window_days]``: ``conversion`` = 1 if the member has
  any transaction line in it, else 0; ``spend`` = the sum of the amounts of those lines;
* **treatment**: the offer (``offer_id``) or its kind (``kind`` from the offers table) of a
  ``sent`` row, ``control_label`` for a ``held_out`` row (``TrainingSetConfig.treatment``);
* **propensity**: the logged propensity of the event (the probability of the arm the row got:
  its offer, or control), NaN where none was logged. At the kind grain it is the probability of
  the offer sent, a lower bound of the probability of the kind (exact when the member was
  eligible for one offer of that kind).

* **level outcome** (``TrainingSetConfig.level_window_days``, optional): ``spend_level``, the
  spend over the longer window ``(ts, ts + level_window_days]``, NaN where that window is not
  over by the data end. It measures the mean effect of a send net of the baskets it pulls
  forward: a send that brings a purchase forward shows a gain in a 14-day window and the loss
  of the basket it replaced only later (training/uplift/fit.py uses it for the spend level).

Rows whose outcome window is not over by the end of the data (``data_end``, default the latest
timestamp in transactions and offer events) are dropped, since their outcome is unknown.

:func:`time_split` gives the time-based holdout: whole campaigns, latest first, make up the
test split; training rows are those whose outcome window ended by the test start.

Errors: :class:`UpliftDataError` (a ``ValueError``) naming the column, value and rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ibis
import numpy as np
import pandas as pd

from features.pipeline import (
    FeatureTables,
    as_tables,
    features_at,
    load_tables,
    resolve_categories,
    to_timestamp,
)
from features.pipeline.config import FeatureConfig
from features.pipeline.engines import connect, spark_memory
from features.pipeline.pit import TablesLike
from features.sources import schema as S

__all__ = [
    "ARM_COLUMNS",
    "CONVERSION",
    "OUTCOMES",
    "SPEND",
    "SPEND_LEVEL",
    "TREATMENT",
    "TrainingSetConfig",
    "UpliftDataError",
    "UpliftTrainingSet",
    "build_training_set",
    "open_tables",
    "time_split",
]

log = logging.getLogger(__name__)

CONVERSION = "conversion"
SPEND = "spend"
SPEND_LEVEL = "spend_level"  # spend over the level window (NaN where it is not over)
OUTCOMES: tuple[str, ...] = (CONVERSION, SPEND)
TREATMENT = "treatment"
ARM_COLUMNS: tuple[str, ...] = (
    S.EVENT_ID,
    S.MEMBER_ID,
    S.TS,
    S.EVENT,
    S.OFFER_ID,
    S.KIND,
    S.CAMPAIGN_ID,
    S.PROPENSITY,
)
_MONEY_SCALE = 10_000  # amounts summed as integer 1/10,000 units (order-independent)


class UpliftDataError(ValueError):
    """The campaign data cannot give a training set (names the column, value and rows)."""


@dataclass(frozen=True)
class TrainingSetConfig:
    """How to build a training set: outcome window, treatment grain, control label."""

    window_days: float = 14.0
    treatment: Literal["kind", "offer"] = "kind"
    control_label: str = "control"
    data_end: Any | None = None  # None: latest timestamp in transactions and offer events
    # None: no ``spend_level`` column; else its window, at least ``window_days``
    level_window_days: float | None = None
    # the features query runs on at most this many (member, ts) pairs at a time (DuckDB; None:
    # all at once); the rows are the same either way, only memory and time change
    pairs_per_query: int | None = 400_000

    def __post_init__(self) -> None:
        if not self.window_days > 0:
            raise UpliftDataError(f"window_days must be > 0; got {self.window_days}")
        if self.level_window_days is not None and not self.level_window_days >= self.window_days:
            raise UpliftDataError(
                f"level_window_days must be >= window_days ({self.window_days}); got "
                f"{self.level_window_days}"
            )
        if self.treatment not in ("kind", "offer"):
            raise UpliftDataError(f"treatment must be 'kind' or 'offer'; got {self.treatment!r}")
        if not self.control_label:
            raise UpliftDataError("control_label must be a non-empty string")
        if self.pairs_per_query is not None and self.pairs_per_query < 1:
            raise UpliftDataError(
                f"pairs_per_query must be >= 1 or None; got {self.pairs_per_query}"
            )


@dataclass(frozen=True)
class UpliftTrainingSet:
    """Rows (arm columns, ``treatment``, outcomes, features), the feature columns and configs.

    ``feature_config`` is the resolved feature configuration (explicit category list): pass it
    to the feature pipeline at serving time so that the columns are the same.
    """

    frame: pd.DataFrame
    feature_columns: tuple[str, ...]
    config: TrainingSetConfig
    feature_config: FeatureConfig
    data_end: pd.Timestamp
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def control(self) -> str:
        return self.config.control_label

    @property
    def treatments(self) -> tuple[str, ...]:
        """Treatment labels present, sorted (control excluded)."""
        labels = set(self.frame[TREATMENT].unique()) - {self.control}
        return tuple(sorted(labels))

    @property
    def features(self) -> pd.DataFrame:
        """The feature columns of every row."""
        return self.frame[list(self.feature_columns)]

    def subset(self, rows: np.ndarray | pd.Series) -> UpliftTrainingSet:
        """The same training set restricted to ``rows`` (a boolean mask or positions)."""
        mask = np.asarray(rows)
        frame = self.frame[mask] if mask.dtype == bool else self.frame.iloc[mask]
        return UpliftTrainingSet(
            frame.reset_index(drop=True),
            self.feature_columns,
            self.config,
            self.feature_config,
            self.data_end,
            dict(self.dropped),
        )

    def window(self, rows: np.ndarray | None = None) -> dict[str, str]:
        """The time span of the rows (or of the boolean mask ``rows``) and their outcomes (for
        run metadata); no copy of the frame is made."""
        ts = self.frame[S.TS] if rows is None else self.frame[S.TS][np.asarray(rows)]
        end = ts.max() + pd.Timedelta(days=self.config.window_days)
        return {
            "first_send": str(ts.min()),
            "last_send": str(ts.max()),
            "outcomes_until": str(end),
        }


def open_tables(
    data_dir: Path | str, engine: str = "duckdb", memory_limit: str | None = None
) -> FeatureTables:
    """``data_dir``'s canonical tables on ``engine`` (``duckdb`` or ``spark``); ``memory_limit``
    (e.g. ``"4GB"``) caps DuckDB, which spills to a temporary directory past it (on Spark: the
    driver's memory). Without a limit DuckDB may take most of the machine's memory."""
    if engine == "duckdb":
        con = connect(engine, memory_limit=memory_limit)
    elif memory_limit is not None:
        con = connect(engine, driver_memory=spark_memory(memory_limit))
    else:
        con = connect(engine)
    return load_tables(Path(data_dir), con)


def build_training_set(
    source: TablesLike,
    config: TrainingSetConfig | None = None,
    feature_config: FeatureConfig | None = None,
) -> UpliftTrainingSet:
    """One row per ``sent`` / ``held_out`` event with features, treatment and outcomes.

    ``source`` is anything the feature pipeline reads (``FeatureTables``, a backend or a data
    directory). See the module docstring for the definitions.
    """
    config = config or TrainingSetConfig()
    tables = as_tables(source)
    arms = _arms(tables, config)
    data_end = _data_end(tables, config)
    window = pd.Timedelta(days=config.window_days)
    dropped = {"window_after_data_end": int((arms[S.TS] + window > data_end).sum())}
    arms = arms[arms[S.TS] + window <= data_end].reset_index(drop=True)
    if arms.empty:
        raise UpliftDataError(
            f"offer_events: no sent/held_out event whose {config.window_days}-day outcome "
            f"window ends by the data end {data_end}"
        )
    outcomes = _outcomes(tables, arms, config.window_days)
    arms = arms.merge(outcomes, on=S.EVENT_ID, how="left", validate="one_to_one")
    arms[SPEND] = arms[SPEND].fillna(0.0)
    arms[CONVERSION] = arms[CONVERSION].fillna(0).astype(np.int64)
    if config.level_window_days is not None:
        arms[SPEND_LEVEL] = _level_outcome(tables, arms, config.level_window_days, data_end)

    fcfg = resolve_categories(tables, feature_config or FeatureConfig(), before=arms[S.TS].max())
    pairs = arms[[S.MEMBER_ID, S.TS]].drop_duplicates()
    feats = _pair_features(tables, pairs, fcfg, config.pairs_per_query)
    feats[S.TS] = feats[S.TS].astype("datetime64[us]")
    skip = (S.MEMBER_ID, S.TS, *S.CONSENT_COLUMNS.values())  # consent is a rule, not a feature
    feature_columns = tuple(c for c in feats.columns if c not in skip)
    clash = sorted(set(feature_columns) & set(arms.columns))
    if clash:
        raise UpliftDataError(f"feature columns clash with training-set columns: {clash}")
    frame = _attach(arms, feats)
    del feats
    dropped["member_not_joined"] = len(arms) - len(frame)
    log.info(
        "uplift training set: %d rows (%d treated, %d control); dropped %s",
        len(frame),
        int((frame[TREATMENT] != config.control_label).sum()),
        int((frame[TREATMENT] == config.control_label).sum()),
        dropped,
    )
    return UpliftTrainingSet(frame, feature_columns, config, fcfg, data_end, dropped)


def _pair_features(
    tables: Any, pairs: pd.DataFrame, fcfg: FeatureConfig, pairs_per_query: int | None
) -> pd.DataFrame:
    """``features_at`` of every (member_id, ts) pair as one frame. On DuckDB the pairs go in
    slices of at most ``pairs_per_query`` (None: one query), whose Arrow results are
    concatenated before the conversion: a pair's features read only its own member's rows and
    the categories are resolved once (``fcfg``), so the rows are the ones a single query gives;
    each slice's aggregation fits in DuckDB's memory limit instead of spilling (1M members:
    1.83M pairs took 160 CPU s in one query at 2GB, docs/benchmarks.md). Other backends: one
    query."""
    expr = features_at(tables, pairs, fcfg, time_col=S.TS)
    backend = expr._find_backend(use_default=True)
    if backend.name != "duckdb" or pairs_per_query is None or len(pairs) <= pairs_per_query:
        return _to_pandas(expr)
    import pyarrow as pa

    parts = []
    for lo in range(0, len(pairs), pairs_per_query):
        part = features_at(tables, pairs.iloc[lo : lo + pairs_per_query], fcfg, time_col=S.TS)
        parts.append(part.to_pyarrow())
    log.info("features of %d pairs in %d queries", len(pairs), len(parts))
    table = pa.concat_tables(parts)
    del parts
    return _arrow_to_pandas(table, expr.schema())


def _to_pandas(expr: Any) -> pd.DataFrame:
    """``expr.to_pandas()`` with the same dtypes and less memory: Ibis' DuckDB backend turns
    every column holding a null into a Python list (one object per value: several GB for the
    1.8M rows of a 1M-member program); float columns are converted from Arrow directly. Each
    column is converted on its own (Ibis' per-column conversion) and dropped from the Arrow
    table as it goes, and the columns are not consolidated into one block at the end: at most
    the Arrow table plus one column's Python objects are alive (docs/benchmarks.md,
    "Retraining at scale")."""
    backend = expr._find_backend(use_default=True)
    if backend.name != "duckdb":
        return expr.to_pandas()
    return _arrow_to_pandas(expr.to_pyarrow(), expr.schema())


def _arrow_to_pandas(table: Any, schema: Any) -> pd.DataFrame:
    """The Arrow ``table`` of a DuckDB query as pandas, column by column (see
    :func:`_to_pandas`); ``table`` is emptied as it goes."""
    import pyarrow.types as pat
    from ibis.backends.duckdb.converter import DuckDBPandasData

    columns: dict[str, pd.Series] = {}
    for name in list(table.column_names):
        col = table.column(name)
        slow = pat.is_nested(col.type) or pat.is_dictionary(col.type) or col.null_count
        values = col.to_pylist() if slow and not pat.is_floating(col.type) else col.to_pandas()
        table = table.drop_columns([name])
        del col
        # the one-column frame infers the dtype exactly as ``pd.DataFrame(columns)`` did
        raw = pd.DataFrame({name: values})[name]
        del values
        columns[name] = DuckDBPandasData.convert_column(raw, schema[name])
        del raw
    return pd.DataFrame(columns, copy=False)


def _attach(arms: pd.DataFrame, feats: pd.DataFrame) -> pd.DataFrame:
    """Arms sorted by (ts, event_id) with the features of their (member, ts) pair; arms without
    a pair (member not joined yet) are left out. No merge: each feature column is taken in the
    arms' order and removed from ``feats`` (which this empties), so a column's memory is
    released as its copy is made instead of holding every feature twice."""
    keys = [S.MEMBER_ID, S.TS]
    if feats.duplicated(keys).any():
        raise UpliftDataError("features: more than one row per (member_id, ts) pair")
    arms = arms.sort_values([S.TS, S.EVENT_ID], kind="mergesort")
    at = pd.MultiIndex.from_frame(feats[keys]).get_indexer(pd.MultiIndex.from_frame(arms[keys]))
    found = at >= 0
    rows = at[found]
    out = arms[found].reset_index(drop=True)
    taken: dict[str, pd.Series] = {}
    for name in [c for c in feats.columns if c not in keys]:
        taken[name] = feats.pop(name).take(rows).reset_index(drop=True)
    return pd.concat([out, pd.DataFrame(taken, copy=False)], axis=1)


def _arms(tables: Any, config: TrainingSetConfig) -> pd.DataFrame:
    """The sent and held_out events with the offer's kind and the treatment label."""
    ev, offers = tables.offer_events, tables.offers
    ev = ev.filter(ev[S.EVENT].isin(["sent", "held_out"]))
    kinds = offers.select(offers[S.OFFER_ID].name("_oid"), offers[S.KIND])
    joined = ev.left_join(kinds, ev[S.OFFER_ID] == kinds["_oid"])
    arms = joined.select(*[joined[c] for c in ARM_COLUMNS]).to_pandas()
    if arms.empty:
        raise UpliftDataError("offer_events: no 'sent' or 'held_out' events to learn from")
    arms[S.TS] = arms[S.TS].astype("datetime64[us]")
    sent = arms[S.EVENT] == "sent"
    no_offer = sent & arms[S.OFFER_ID].isna()
    if no_offer.any():
        ids = arms.loc[no_offer, S.EVENT_ID].head(5).tolist()
        raise UpliftDataError(
            f"offer_events: {int(no_offer.sum())} 'sent' event(s) without offer_id, e.g. {ids}"
        )
    column = S.KIND if config.treatment == "kind" else S.OFFER_ID
    unknown = sent & arms[column].isna()
    if unknown.any():
        rows = arms.loc[unknown, [S.EVENT_ID, S.OFFER_ID]].head(5).to_dict("records")
        raise UpliftDataError(
            f"offer_events: {int(unknown.sum())} 'sent' event(s) whose offer_id is not in the "
            f"offers table (no kind), e.g. {rows}"
        )
    if (arms.loc[sent, column] == config.control_label).any():
        raise UpliftDataError(
            f"control_label {config.control_label!r} is also a {column} of sent offers; "
            "choose another control_label"
        )
    arms[TREATMENT] = np.where(sent, arms[column].astype(object), config.control_label)
    prop = arms[S.PROPENSITY]
    bad = prop.notna() & ~((prop > 0) & (prop <= 1))
    if bad.any():
        rows = arms.loc[bad, [S.EVENT_ID, S.PROPENSITY]].head(5).to_dict("records")
        raise UpliftDataError(f"offer_events: propensity outside (0, 1] in {rows}")
    dup = arms[S.EVENT_ID].duplicated()
    if dup.any():
        raise UpliftDataError(
            f"offer_events: duplicated event_id {arms.loc[dup, S.EVENT_ID].head(5).tolist()}"
        )
    return arms


def _data_end(tables: Any, config: TrainingSetConfig) -> pd.Timestamp:
    if config.data_end is not None:
        return pd.Timestamp(to_timestamp(config.data_end))
    ends = [tables.transactions[S.TS].max().execute(), tables.offer_events[S.TS].max().execute()]
    ends = [pd.Timestamp(e) for e in ends if e is not None and not pd.isna(e)]
    if not ends:
        raise UpliftDataError("transactions and offer_events hold no timestamp: no data end")
    return max(ends)


def _outcomes(tables: Any, arms: pd.DataFrame, window_days: float) -> pd.DataFrame:
    """``conversion`` and ``spend`` per event_id over ``(ts, ts + window]``, in one query."""
    keys = ibis.memtable(arms[[S.EVENT_ID, S.MEMBER_ID, S.TS]].rename(columns={S.TS: "_t0"}))
    t = tables.transactions
    seconds = round(window_days * 86_400)
    end = keys["_t0"] + ibis.interval(seconds=seconds)
    j = keys.join(
        t,
        [keys[S.MEMBER_ID] == t[S.MEMBER_ID], t[S.TS] > keys["_t0"], t[S.TS] <= end],
    )
    units = (j[S.AMOUNT] * _MONEY_SCALE).round().cast("int64")
    agg = j.group_by(j[S.EVENT_ID]).aggregate(_lines=j[S.TS].count(), _units=units.sum())
    out = agg.to_pandas()
    return pd.DataFrame(
        {
            S.EVENT_ID: out[S.EVENT_ID],
            CONVERSION: (out["_lines"] > 0).astype(np.int64),
            SPEND: out["_units"].fillna(0).astype(np.float64) / _MONEY_SCALE,
        }
    )


def _level_outcome(
    tables: Any, arms: pd.DataFrame, window_days: float, data_end: pd.Timestamp
) -> np.ndarray:
    """Spend per row of ``arms`` over ``(ts, ts + window_days]``; NaN where that window ends
    after ``data_end`` (its outcome is not known yet)."""
    out = _outcomes(tables, arms, window_days).set_index(S.EVENT_ID)[SPEND]
    spend = out.reindex(arms[S.EVENT_ID]).fillna(0.0).to_numpy(dtype=np.float64)
    over = (arms[S.TS] + pd.Timedelta(days=window_days) <= data_end).to_numpy()
    return np.where(over, spend, np.nan)


def time_split(
    data: UpliftTrainingSet, test_share: float = 0.2, split_at: Any | None = None
) -> tuple[np.ndarray, np.ndarray, pd.Timestamp]:
    """Time-based holdout: ``(train_mask, test_mask, test_start)``.

    Rows are grouped by campaign (rows without a campaign are their own group) and a group's
    time is its earliest row. Without ``split_at``, the latest groups whose rows make up at
    least ``test_share`` of all rows form the test split and ``test_start`` is the earliest
    time among them; with ``split_at``, test = groups starting at or after it. Training rows
    are the rows before ``test_start`` whose outcome window ended by ``test_start`` (nothing
    observed in the test period is used to train).
    """
    if not 0.0 < test_share < 1.0:
        raise UpliftDataError(f"test_share must be in (0, 1); got {test_share}")
    frame = data.frame
    group = (
        frame[S.CAMPAIGN_ID].astype(object).where(frame[S.CAMPAIGN_ID].notna(), frame[S.EVENT_ID])
    )
    start = frame.groupby(group, sort=False)[S.TS].transform("min")
    if split_at is not None:
        test_start = pd.Timestamp(to_timestamp(split_at))
    else:
        sizes = frame.groupby(group, sort=False)[S.TS].agg(["min", "size"])
        sizes = sizes.sort_values("min", ascending=False, kind="mergesort")
        cum = sizes["size"].cumsum() / len(frame)
        k = int(np.searchsorted(cum.to_numpy(), test_share)) + 1
        test_start = sizes["min"].iloc[:k].min()
    test = (start >= test_start).to_numpy()
    outcome_end = frame[S.TS] + pd.Timedelta(days=data.config.window_days)
    train = (~test) & (outcome_end <= test_start).to_numpy()
    if not test.any() or not train.any():
        raise UpliftDataError(
            f"time split at {test_start}: {int(train.sum())} train and {int(test.sum())} test "
            "rows; need both (fewer campaigns than splits, or split_at outside the data)"
        )
    return train, test, pd.Timestamp(test_start)
