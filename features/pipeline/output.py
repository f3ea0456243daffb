"""Executing a feature table into a Parquet or CSV file, with per-column null counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.pipeline.tables import FeatureInputError

__all__ = ["FeatureFileSummary", "write_features"]

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
    summary.seconds = time.perf_counter() - t0
    log.info("wrote %d rows to %s in %.1f s", summary.rows, path, summary.seconds)
    return summary
