"""Adapters from public data sets to the canonical tables.

Each adapter module exposes ``convert(src: Path) -> AdapterResult``; :func:`write` stores the
result (four Parquet tables plus ``import_report.json``). ``ADAPTERS`` maps the data-set name used
on the command line (which is also its folder under ``../shared/data``) to its converter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from features.sources.adapters import complete_journey, hillstrom, starbucks
from features.sources.adapters.common import (
    AdapterResult,
    ImportReport,
    ReportLine,
    SourceDataError,
    TableCounts,
    write,
)

__all__ = [
    "ADAPTERS",
    "AdapterResult",
    "ImportReport",
    "ReportLine",
    "SourceDataError",
    "TableCounts",
    "convert",
    "write",
]

ADAPTERS: dict[str, Callable[[Path], AdapterResult]] = {
    "starbucks": starbucks.convert,
    "hillstrom": hillstrom.convert,
    "complete-journey": complete_journey.convert,
}


def convert(name: str, src: Path) -> AdapterResult:
    """Convert data set ``name`` (a key of ADAPTERS) read from ``src``."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown data set {name!r}; expected one of {sorted(ADAPTERS)}")
    return ADAPTERS[name](Path(src))
