"""The canonical tables as Ibis tables on one backend (DuckDB by default, or PySpark).

The feature expressions only see ``FeatureTables``; where the tables come from (a data
directory's Parquet/CSV files, in-memory frames, a warehouse) is decided here. Every table is
cast to the canonical types of ``features.sources.schema`` so CSV and Parquet give the same
features.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import pandas as pd
import pyarrow as pa
from ibis.backends import BaseBackend

from features.sources.io import arrow_schema, find_table_file
from features.sources.schema import TABLE_ORDER, TABLES

__all__ = [
    "IBIS_TYPES",
    "FeatureInputError",
    "FeatureTables",
    "canonical_schema",
    "load_tables",
    "tables_from_frames",
    "unbound_tables",
]

log = logging.getLogger(__name__)

IBIS_TYPES: dict[str, dt.DataType] = {
    "string": dt.string,
    "timestamp": dt.Timestamp(),
    "float": dt.float64,
    "int": dt.int64,
    "bool": dt.boolean,
}


class FeatureInputError(ValueError):
    """Input of the feature pipeline is unusable (missing table or column, bad pairs, ...)."""


def canonical_schema(table: str) -> ibis.Schema:
    """Ibis schema of a canonical table (all columns, canonical order)."""
    spec = TABLES[table]
    return ibis.schema({c.name: IBIS_TYPES[c.dtype] for c in spec.columns})


@dataclass(frozen=True)
class FeatureTables:
    """The four canonical tables as Ibis tables of one backend (``offers`` for offer kinds)."""

    members: ibis.Table
    offers: ibis.Table
    transactions: ibis.Table
    offer_events: ibis.Table

    def __getitem__(self, name: str) -> ibis.Table:
        return getattr(self, name)


def _canonical(t: ibis.Table, table: str, source: str) -> ibis.Table:
    """Select the canonical columns in order, cast them, add absent nullable ones as nulls."""
    spec = TABLES[table]
    missing = [c for c in spec.required if c not in t.columns]
    if missing:
        raise FeatureInputError(f"{source}: required column(s) {missing} missing from '{table}'")
    cols = {}
    for col in spec.columns:
        typ = IBIS_TYPES[col.dtype]
        if col.name in t.columns:
            cols[col.name] = t[col.name] if t[col.name].type() == typ else t[col.name].cast(typ)
        else:
            cols[col.name] = ibis.null(typ)
    return t.select(**cols)


def load_tables(data_dir: Path | str, con: BaseBackend | None = None) -> FeatureTables:
    """Open the canonical files of ``data_dir`` as Ibis tables (DuckDB unless ``con`` is given).

    Files are read lazily by the backend (no pandas round trip). CSV columns are read as text
    and cast to canonical types. A missing ``offer_events`` or ``offers`` file gives an empty
    table (a source without campaigns); missing ``members`` or ``transactions`` is an error.
    """
    data_dir = Path(data_dir)
    con = con if con is not None else ibis.duckdb.connect()
    is_duckdb = con.name == "duckdb"
    tables: dict[str, ibis.Table] = {}
    for name in TABLE_ORDER:
        path = find_table_file(data_dir, name)
        if path is None:
            if name in ("members", "transactions"):
                raise FeatureInputError(f"{data_dir}: no '{name}' table (.parquet or .csv)")
            log.info("%s: no %s table; using an empty one", data_dir, name)
            tables[name] = _empty(con, name)
            continue
        view = _unique(name)
        if path.name.endswith(".parquet"):
            raw = con.read_parquet(path, table_name=view)
        elif is_duckdb:
            raw = con.read_csv(path, table_name=view, all_varchar=True)
        else:
            raw = con.read_csv(path, table_name=view, header=True, inferSchema=False)
        tables[name] = _canonical(raw, name, str(path))
    return FeatureTables(**tables)


def _unique(name: str) -> str:
    """A table/view name no other FeatureTables of the same session uses."""
    return f"offers_{name}_{uuid.uuid4().hex[:12]}"


def _upload(con: BaseBackend, name: str, data: pa.Table) -> ibis.Table:
    """``data`` as a session-scoped table of ``con`` (a temporary view on Spark: nothing is
    written to a warehouse directory)."""
    if con.name == "pyspark":
        return con.create_view(_unique(name), ibis.memtable(data), overwrite=True)
    return con.create_table(_unique(name), data, temp=True, overwrite=True)


def _empty(con: BaseBackend, name: str) -> ibis.Table:
    return _upload(con, name, arrow_schema(TABLES[name]).empty_table())


def tables_from_frames(
    frames: Mapping[str, pd.DataFrame] | Any, con: BaseBackend | None = None
) -> FeatureTables:
    """Upload canonical pandas frames (a mapping, or an object with table attributes such as a
    simulated ``Program``) to ``con`` (a fresh in-memory DuckDB by default)."""
    con = con if con is not None else ibis.duckdb.connect()
    tables = {}
    for name in TABLE_ORDER:
        df = frames.get(name) if isinstance(frames, Mapping) else getattr(frames, name, None)
        if df is None:
            if name in ("members", "transactions"):
                raise FeatureInputError(f"frames: no '{name}' table")
            tables[name] = _empty(con, name)
            continue
        uploaded = _upload(con, name, _to_arrow(df, name))
        tables[name] = _canonical(uploaded, name, "frames")
    return FeatureTables(**tables)


def _to_arrow(df: pd.DataFrame, name: str) -> pa.Table:
    """A canonical Arrow table (absent nullable columns as typed nulls)."""
    spec = TABLES[name]
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        raise FeatureInputError(f"frames: required column(s) {missing} missing from '{name}'")
    return pa.Table.from_pandas(
        df.reindex(columns=spec.column_names), schema=arrow_schema(spec), preserve_index=False
    )


def unbound_tables() -> FeatureTables:
    """Unbound tables named after the canonical tables (to compile SQL once, run it anywhere)."""
    return FeatureTables(
        **{name: ibis.table(canonical_schema(name), name=name) for name in TABLE_ORDER}
    )
