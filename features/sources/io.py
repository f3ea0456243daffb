"""Reading and writing canonical tables in a data directory (Parquet or CSV).

A data directory holds one file per table, named after the table: ``members.parquet`` or
``members.csv`` (optionally ``.csv.gz``). Writing always produces Parquet with the canonical
Arrow schema, so the same frame gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.sources.schema import TABLE_ORDER, TABLES, TableSpec

__all__ = [
    "ARROW_TYPES",
    "DataFileError",
    "arrow_schema",
    "find_table_file",
    "read_raw",
    "to_canonical_frame",
    "write_table",
]

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us"),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}

_SUFFIXES = (".parquet", ".csv", ".csv.gz")


class DataFileError(ValueError):
    """A data directory is missing a table file or a file cannot be read at all."""


def arrow_schema(spec: TableSpec, columns: list[str] | None = None) -> pa.Schema:
    """Canonical Arrow schema of a table (optionally restricted to ``columns``)."""
    names = columns if columns is not None else spec.column_names
    return pa.schema([(n, ARROW_TYPES[spec.by_name[n].dtype]) for n in names])


def find_table_file(data_dir: Path, table: str) -> Path | None:
    """The file holding ``table`` in ``data_dir``, or None. Two candidates is an error."""
    found = [data_dir / f"{table}{s}" for s in _SUFFIXES if (data_dir / f"{table}{s}").exists()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataFileError(f"{data_dir}: table '{table}' is stored twice ({names}); keep one")
    return found[0] if found else None


def read_raw(path: Path) -> pd.DataFrame:
    """Read a table file as it is. CSV columns come back as strings (typing is validation's job)."""
    try:
        if path.name.endswith(".parquet"):
            return pq.read_table(path).to_pandas()
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # a file that is not Parquet/CSV at all
        raise DataFileError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def to_canonical_frame(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Order columns as the schema does, add absent nullable columns, cast to canonical dtypes.

    Expects already-valid values (an adapter's or the simulator's output); invalid input raises.
    """
    spec = TABLES[table]
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: required columns missing: {missing}")
    extra = [c for c in df.columns if c not in spec.by_name]
    if extra:
        raise ValueError(f"{table}: columns not in the canonical schema: {extra}")
    return _to_arrow(df, spec).to_pandas()


def _to_arrow(df: pd.DataFrame, spec: TableSpec) -> pa.Table:
    """Canonical Arrow table: schema order and types; absent nullable columns become nulls."""
    n = len(df)
    arrays = []
    for col in spec.columns:
        typ = ARROW_TYPES[col.dtype]
        if col.name in df.columns:
            arrays.append(pa.array(df[col.name], type=typ, from_pandas=True))
        else:
            arrays.append(pa.nulls(n, type=typ))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(spec))


def write_table(df: pd.DataFrame, out_dir: Path, table: str) -> Path:
    """Write a canonical table as Parquet (deterministic bytes for the same frame)."""
    spec = TABLES[table]
    out_dir.mkdir(parents=True, exist_ok=True)
    arrow = _to_arrow(df, spec)
    path = out_dir / f"{table}.parquet"
    pq.write_table(arrow, path, compression="zstd")
    return path


def table_files(data_dir: Path) -> dict[str, Path | None]:
    """Every canonical table's file in ``data_dir`` (None where absent)."""
    return {t: find_table_file(data_dir, t) for t in TABLE_ORDER}
