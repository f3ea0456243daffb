"""Features of one member at a given time, with the batch pipeline's definitions.

The batch Ibis expression (``features_at`` over unbound canonical tables and a one-row pairs
table) is compiled to DuckDB SQL once; each request registers that member's rows in an
in-memory DuckDB connection and runs the compiled SQL. There is no second implementation of the
features, so batch and online values are identical (tests/unit/test_features_online.py).

The request's live context (the current basket) is not history before ``as_of``: it is kept
out of the history features and summarised in separate ``basket_*`` columns.

Serving does not call this today: it reads the member-feature snapshot written by the batch
pipeline. This module is the path for computing one member fresh (its cost is measured by
``bench/features.py``) and holds batch and one-member values equal in the tests.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
from ibis.formats.pandas import PandasData

from features.pipeline.config import FeatureConfig
from features.pipeline.history import AS_OF
from features.pipeline.pit import features_at, to_timestamp
from features.pipeline.tables import FeatureInputError, unbound_tables
from features.sources import schema as S
from features.sources.io import arrow_schema

__all__ = ["BASKET_COLUMNS", "OnlineFeatures", "basket_context"]

log = logging.getLogger(__name__)

PAIRS = "pairs"
_SKIPPED_OPTIMIZERS = "common_subexpressions,expression_rewriter"


class OnlineFeatures:
    """Compute one member's features from that member's rows (thread-safe, reusable).

    ``config`` must have explicit ``categories`` (the training run's resolved config), so the
    columns do not depend on one member's data. ``offers`` is the catalog (for offer kinds).
    """

    def __init__(self, config: FeatureConfig, offers: pd.DataFrame) -> None:
        if config.categories is None:
            raise FeatureInputError(
                "config.categories: serving needs the explicit category list of training"
            )
        self.config = config
        pairs = ibis.table({S.MEMBER_ID: "string", AS_OF: "timestamp"}, name=PAIRS)
        expr = features_at(unbound_tables(), pairs, config)
        self.sql_: str = ibis.to_sql(expr, dialect="duckdb")
        self.schema_: ibis.Schema = expr.schema()
        self._con = duckdb.connect()
        self._con.register("offers_frame", _arrow(offers, "offers"))
        self._con.execute("CREATE TABLE offers AS SELECT * FROM offers_frame")
        self._con.unregister("offers_frame")
        self._local = threading.local()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
            # On a handful of rows, planning dominates: skip two optimizer passes that only
            # pay off on big inputs (they never change results).
            cur.execute(f"SET disabled_optimizers = '{_SKIPPED_OPTIMIZERS}'")
            cur.execute("SET threads TO 1")
        return cur

    def compute(
        self,
        member: pd.DataFrame,
        transactions: pd.DataFrame,
        offer_events: pd.DataFrame,
        as_of: Any,
        basket: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """One row of features of the member in ``member`` (a one-row ``members`` frame) as of
        ``as_of`` from its transactions and offer events (rows of other members are ignored),
        plus ``basket_*`` context columns when ``basket`` is given.

        Returns zero rows if the member joined on or after ``as_of``.
        """
        if len(member) != 1:
            raise FeatureInputError(f"member: expected one members row, got {len(member)}")
        when = to_timestamp(as_of)
        member_id = str(member[S.MEMBER_ID].iloc[0])
        cur = self._cursor()
        pairs = pa.table({S.MEMBER_ID: [member_id], AS_OF: pa.array([when], pa.timestamp("us"))})
        cur.register("members", _arrow(member, "members"))
        cur.register("transactions", _arrow(transactions, "transactions"))
        cur.register("offer_events", _arrow(offer_events, "offer_events"))
        cur.register(PAIRS, pairs)
        try:
            out = cur.execute(self.sql_).arrow().read_all()
        finally:
            for name in ("members", "transactions", "offer_events", PAIRS):
                cur.unregister(name)
        # The same pandas conversion as Ibis' execute(), so batch and online frames compare equal.
        frame = PandasData.convert_table(out.to_pandas(), self.schema_)
        if basket is not None:
            ctx = basket_context(basket, self.config, frame)
            frame = pd.concat([frame, ctx.iloc[: len(frame)].set_index(frame.index)], axis=1)
        return frame


def _arrow(df: pd.DataFrame, table: str) -> pa.Table:
    """A canonical Arrow table of ``df`` (absent nullable columns as nulls)."""
    spec = S.TABLES[table]
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        raise FeatureInputError(f"{table}: required column(s) {missing} missing")
    return pa.Table.from_pandas(
        df.reindex(columns=spec.column_names), schema=arrow_schema(spec), preserve_index=False
    )


BASKET_COLUMNS = (
    "basket_total",
    "basket_n_lines",
    "basket_n_categories",
    "basket_top_category",
    "basket_points",
    "basket_reaches_next_tier",
    "basket_is_milestone",
)


def basket_context(
    basket: pd.DataFrame, config: FeatureConfig, history: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row summarising the current basket (lines with ``amount`` and optional ``category``).

    Columns: ``BASKET_COLUMNS`` plus ``basket_share_<category>`` / ``basket_share_other``
    (share of the basket total per configured category). With ``history`` (the member's feature
    row), ``basket_reaches_next_tier`` says whether the basket's points cover
    ``points_to_next_tier`` and ``basket_is_milestone`` whether this purchase is the next
    purchase-count milestone; both are null without history.
    """
    if S.AMOUNT not in basket.columns:
        raise FeatureInputError("basket: column 'amount' missing")
    amount = pd.to_numeric(basket[S.AMOUNT], errors="raise").astype("float64").to_numpy()
    if (amount < 0).any():
        raise FeatureInputError(f"basket: negative amount {amount[amount < 0][:3].tolist()}")
    cats = (
        basket[S.CATEGORY].astype("object")
        if S.CATEGORY in basket.columns
        else pd.Series([None] * len(basket), dtype="object")
    )
    total = float(amount.sum())
    by_cat = pd.Series(amount, index=cats.to_numpy()).groupby(level=0, dropna=True).sum()
    known = config.category_columns
    row: dict[str, Any] = {
        "basket_total": total,
        "basket_n_lines": len(basket),
        "basket_n_categories": int(cats.nunique(dropna=True)),
        "basket_top_category": str(by_cat.idxmax()) if len(by_cat) else None,
        "basket_points": total * config.points_per_currency_unit,
    }
    in_known = sum(float(by_cat.get(c, 0.0)) for c in known)
    for cat, col in known.items():
        row[f"basket_{col}"] = float(by_cat.get(cat, 0.0)) / total if total > 0 else np.nan
    row["basket_share_other"] = (total - in_known) / total if total > 0 else np.nan
    reaches, milestone = None, None
    if history is not None and len(history):
        to_next = history["points_to_next_tier"].iloc[0]
        reaches = bool(pd.notna(to_next) and row["basket_points"] >= to_next)
        milestone = bool(history["purchases_to_next_milestone"].iloc[0] == 1)
    row["basket_reaches_next_tier"] = reaches
    row["basket_is_milestone"] = milestone
    return pd.DataFrame([row])
