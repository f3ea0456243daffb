"""``offers import``: convert a public data set into canonical tables plus an import report."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from features.sources.adapters import ADAPTERS, AdapterResult, ImportReport, SourceDataError, write

console = Console()

# Where the public data sets live; the same variable the test suite honours.


class DataSet(StrEnum):
    """The data sets with an adapter (each is also its folder name under the shared data)."""

    starbucks = "starbucks"
    hillstrom = "hillstrom"
    complete_journey = "complete-journey"


def default_src(dataset: str) -> Path:
    """``$OFFERS_SHARED_DATA/<dataset>``, or ``../shared/data/<dataset>`` beside the repository."""
    from features.settings import DataSettings

    return DataSettings().shared_data / dataset


def render_report(report: ImportReport, out: Console = console) -> None:
    """Counts per table, then every reason (fixed, rejected, note) with its count."""
    counts = Table(title=f"{report.dataset}: rows per canonical table")
    for col in ("table", "read", "written", "fixed", "rejected"):
        counts.add_column(col, justify="left" if col == "table" else "right")
    for name, c in report.tables.items():
        counts.add_row(name, f"{c.read:,}", f"{c.written:,}", f"{c.fixed:,}", f"{c.rejected:,}")
    out.print(counts)
    reasons = Table(title="reasons")
    for col in ("table", "kind", "count", "source: reason"):
        reasons.add_column(col, justify="right" if col == "count" else "left")
    colour = {"fixed": "yellow", "rejected": "red", "note": "cyan"}
    for line in report.lines:
        if line.count == 0 and line.kind != "note":
            continue  # checks that found nothing; they stay in import_report.json
        reasons.add_row(
            line.table,
            f"[{colour[line.kind]}]{line.kind}[/]",
            f"{line.count:,}",
            f"{line.source}: {line.reason}",
        )
    out.print(reasons)


def import_data(
    dataset: Annotated[DataSet, typer.Argument(help="which public data set to convert")],
    out: Annotated[Path, typer.Option(help="directory to write the canonical tables into")],
    src: Annotated[
        Path | None,
        typer.Option(
            help="source folder; default $OFFERS_SHARED_DATA or ../shared/data, "
            "then the data set's name"
        ),
    ] = None,
) -> None:
    """Convert a public data set into the four canonical tables and import_report.json."""
    source = src if src is not None else default_src(dataset.value)
    try:
        with console.status(f"converting {dataset.value} from {source} ..."):
            result: AdapterResult = ADAPTERS[dataset.value](source)
        with console.status(f"writing {out} ..."):
            paths = write(result, out)
    except SourceDataError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=1) from exc
    render_report(result.report)
    console.print(f"wrote {len(paths)} files to [bold]{out}[/]")


def register(app: typer.Typer) -> None:
    app.command("import")(import_data)
