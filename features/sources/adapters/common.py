"""What every adapter shares: the result and report types, writing, and source-file reading.

An adapter turns one public data set into the four canonical tables and an :class:`ImportReport`
that accounts for every source row: how many were read for each canonical table, how many rows
were written, how many values were fixed and how many rows were rejected, each under a named
reason. Nothing is dropped without a line in the report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.json as pj

from features.sources.io import to_canonical_frame, write_table
from features.sources.schema import TABLE_ORDER

__all__ = [
    "REPORT_FILE",
    "AdapterResult",
    "ImportReport",
    "ReportLine",
    "SourceDataError",
    "TableCounts",
    "read_json_lines",
    "require_columns",
    "require_file",
    "write",
]

log = logging.getLogger(__name__)

REPORT_FILE = "import_report.json"
LineKind = Literal["fixed", "rejected", "note"]


class SourceDataError(ValueError):
    """A source file is missing, unreadable, or lacks a column the adapter needs."""


@dataclass
class TableCounts:
    """Rows of one canonical table: source rows read, rows written, values fixed, rows rejected.

    ``read`` counts the source rows that feed the table; ``written`` the canonical rows produced
    (one source row may give several, e.g. a Hillstrom customer gives a member, an event and a
    transaction). Every source row read is either represented in ``written`` or ``rejected``.
    """

    read: int = 0
    written: int = 0
    fixed: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class ReportLine:
    """One named reason: ``count`` rows of ``source`` fixed, rejected, or worth noting."""

    table: str
    kind: LineKind
    count: int
    source: str
    reason: str

    @property
    def text(self) -> str:
        return f"{self.source}: {self.count:,} {self.reason} ({self.kind})"


@dataclass
class ImportReport:
    """Counts per canonical table plus every reason for a fixed, rejected or notable row."""

    dataset: str
    source: str
    tables: dict[str, TableCounts] = field(
        default_factory=lambda: {t: TableCounts() for t in TABLE_ORDER}
    )
    lines: list[ReportLine] = field(default_factory=list)

    def read(self, table: str, count: int) -> None:
        """Add ``count`` source rows read for ``table``."""
        self.tables[table].read += int(count)

    def fixed(self, table: str, count: int, source: str, reason: str) -> None:
        """Record ``count`` rows whose values were changed to satisfy the contract."""
        self._add(table, "fixed", count, source, reason)
        self.tables[table].fixed += int(count)

    def rejected(self, table: str, count: int, source: str, reason: str) -> None:
        """Record ``count`` source rows not written, with the reason."""
        self._add(table, "rejected", count, source, reason)
        self.tables[table].rejected += int(count)

    def note(self, table: str, count: int, source: str, reason: str) -> None:
        """Record a count that needs no fix but that a reader of the data should know."""
        self._add(table, "note", count, source, reason)

    def _add(self, table: str, kind: LineKind, count: int, source: str, reason: str) -> None:
        line = ReportLine(table, kind, int(count), source, reason)
        log.info("%s %s: %s", self.dataset, table, line.text)
        self.lines.append(line)

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "tables": {t: asdict(c) for t, c in self.tables.items()},
            "lines": [asdict(ln) | {"text": ln.text} for ln in self.lines],
        }


@dataclass
class AdapterResult:
    """The canonical tables converted from one data set, and the report that accounts for them."""

    members: pd.DataFrame
    offers: pd.DataFrame
    transactions: pd.DataFrame
    offer_events: pd.DataFrame
    report: ImportReport

    @classmethod
    def build(cls, frames: dict[str, pd.DataFrame], report: ImportReport) -> AdapterResult:
        """Cast every frame to its canonical form and fill in the written counts."""
        canonical = {
            t: to_canonical_frame(frames[t].reset_index(drop=True), t) for t in TABLE_ORDER
        }
        for t, df in canonical.items():
            report.tables[t].written = len(df)
        return cls(report=report, **canonical)

    def table(self, name: str) -> pd.DataFrame:
        """A canonical table by name."""
        if name not in TABLE_ORDER:
            raise KeyError(f"unknown table {name!r}; expected one of {TABLE_ORDER}")
        return getattr(self, name)


def write(result: AdapterResult, out: Path) -> list[Path]:
    """Write the four tables as Parquet and the report as ``import_report.json`` into ``out``."""
    out = Path(out)
    paths = [write_table(result.table(t), out, t) for t in TABLE_ORDER]
    report_path = out / REPORT_FILE
    report_path.write_text(json.dumps(result.report.to_dict(), indent=2) + "\n")
    paths.append(report_path)
    return paths


# ---- reading sources ---------------------------------------------------------------------------
def require_file(src: Path, name: str) -> Path:
    """``src / name``, or a SourceDataError naming the missing file."""
    path = Path(src) / name
    if not path.is_file():
        raise SourceDataError(f"{path}: source file not found (expected in {src})")
    return path


def require_columns(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Raise SourceDataError naming the file and every absent column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceDataError(
            f"{path.name}: required column(s) {missing} absent; columns present: {list(df.columns)}"
        )


def read_json_lines(path: Path, schema: pa.Schema) -> pd.DataFrame:
    """A JSON Lines file (gzip detected from the suffix) with ``schema``; structs flattened.

    Fields absent from ``schema`` are ignored; an absent field reads as null. Nested struct fields
    come back as ``parent.child`` columns.
    """
    opts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            table = pj.read_json(stream, parse_options=opts)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceDataError(f"{path}: cannot be read as JSON Lines ({exc})") from exc
    return table.flatten().to_pandas()
