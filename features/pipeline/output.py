"""Executing a feature table into a Parquet or CSV file, with per-column null counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.pipeline.config import FeatureConfig
from features.pipeline.tables import FeatureInputError
from features.sources import schema as S

__all__ = ["FeatureFileSummary", "write_features", "write_member_snapshot"]

log = logging.getLogger(__name__)

_FORMATS = {".parquet": "parquet", ".csv": "csv"}


@dataclass
class FeatureFileSummary:
    """What was written: rows, and per column its type and number of nulls."""

    path: Path
    rows: int = 0
    types: dict[str, str] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def write_features(
    expr: ir.Table,
    path: Path | str,
    on_rows: Callable[[int], None] | None = None,
    batch_rows: int = 262_144,
) -> FeatureFileSummary:
    """Execute ``expr`` and stream it to ``path`` (format by suffix: .parquet or .csv).

    ``on_rows(n)`` is called after every batch with the rows written so far (progress).
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FeatureInputError(f"--out {path}: suffix must be one of {sorted(_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    backend = expr._find_backend()
    if backend.name == "duckdb":
        summary = _write_duckdb(backend, expr, path, fmt)
        if on_rows is not None:
            on_rows(summary.rows)
    else:
        summary = _write_batches(expr, path, fmt, on_rows, batch_rows)
    summary.seconds = time.perf_counter() - t0
    log.info("wrote %d rows to %s in %.1f s", summary.rows, path, summary.seconds)
    return summary


def write_member_snapshot(
    data: Path | str, as_of: object, path: Path, config: FeatureConfig | None = None
) -> int:
    """Member features of every member of ``data`` as of ``as_of``, sorted by member id, to
    ``path`` (Parquet, written by DuckDB without a pandas copy of the whole base, renamed into
    place when complete); returns the number of rows. Batch scoring's input: who may be
    contacted on a channel is the engine's ``consent`` rule, applied per decision.

    ``config``: the feature configuration the models were trained with (None: the default)."""
    from features.pipeline import load_tables, member_features  # the package imports this module

    tables = load_tables(Path(data))
    feats = member_features(tables, as_of, config).order_by(S.MEMBER_ID)
    tmp = path.with_name(path.name + ".tmp")
    feats.to_parquet(tmp)
    tmp.replace(path)
    return pq.ParquetFile(path).metadata.num_rows


def _write_duckdb(con: Any, expr: ir.Table, path: Path, fmt: str) -> FeatureFileSummary:
    """DuckDB writes the file itself (parallel, no Arrow round trip); nulls are counted from the
    written file in one scan."""
    query = _typed_query(con, expr)
    if fmt == "parquet":
        options = "FORMAT 'parquet', COMPRESSION 'zstd'"
        scan = f"read_parquet('{_quote(path)}')"
    else:
        options = "FORMAT 'csv', HEADER 1"
        scan = f"read_csv('{_quote(path)}', all_varchar = true, header = true)"
    con._run_pre_execute_hooks(expr)  # registers memtables, as Ibis' own to_parquet does
    con.raw_sql(f"COPY ({query}) TO '{_quote(path)}' ({options})").fetchall()
    schema = expr.schema().to_pyarrow()
    counts = ", ".join(f'count("{_quote(n, chr(34))}")' for n in schema.names)
    row = con.raw_sql(f"SELECT count(*), {counts} FROM {scan}").fetchone()
    return FeatureFileSummary(
        path=path,
        rows=int(row[0]),
        types={f.name: str(f.type) for f in schema},
        nulls={n: int(row[0]) - int(c) for n, c in zip(schema.names, row[1:], strict=True)},
    )


def _typed_query(con: Any, expr: ir.Table) -> str:
    """``expr``'s SQL with every integer column cast to its Ibis type. Ibis drops a cast to the
    type it already infers (``sum`` of integers is int64 to Ibis) while DuckDB's ``SUM`` of
    integers is a HUGEINT, which its Parquet writer stores as DOUBLE: without the cast the
    37 count features were doubles in DuckDB's file and int64 in Spark's."""
    from ibis.backends.sql.datatypes import DuckDBType

    cols = []
    for name, dtype in expr.schema().items():
        q = '"' + _quote(name, '"') + '"'
        if dtype.is_integer():
            cols.append(f"CAST({q} AS {DuckDBType.from_ibis(dtype).sql('duckdb')}) AS {q}")
        else:
            cols.append(q)
    return f"SELECT {', '.join(cols)} FROM ({con.compile(expr)}) AS t"


def _quote(text: object, quote: str = "'") -> str:
    return str(text).replace(quote, quote * 2)


def _write_batches(
    expr: ir.Table,
    path: Path,
    fmt: str,
    on_rows: Callable[[int], None] | None,
    batch_rows: int,
) -> FeatureFileSummary:
    """Stream Arrow batches from the backend into a Parquet or CSV writer."""
    reader = expr.to_pyarrow_batches(chunk_size=batch_rows)
    schema: pa.Schema = reader.schema
    summary = FeatureFileSummary(
        path=path,
        types={f.name: str(f.type) for f in schema},
        nulls={f.name: 0 for f in schema},
    )
    writer: pq.ParquetWriter | pacsv.CSVWriter
    if fmt == "parquet":
        writer = pq.ParquetWriter(path, schema, compression="zstd")
    else:
        writer = pacsv.CSVWriter(path, schema)
    try:
        for batch in reader:
            if batch.num_rows == 0:
                continue
            writer.write_batch(batch)
            summary.rows += batch.num_rows
            for name, col in zip(schema.names, batch.columns, strict=True):
                summary.nulls[name] += col.null_count
            if on_rows is not None:
                on_rows(summary.rows)
    finally:
        writer.close()
    return summary
