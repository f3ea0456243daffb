"""``offers validate``: check a data directory against the canonical tables."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from features.sources.validate import ValidationResult, validate_dir

console = Console()


def render_validation(result: ValidationResult, out: Console = console) -> None:
    """Problems grouped by kind (first offending rows of each), then counts per table."""
    status = "[green]OK[/]" if result.ok else "[red]INVALID[/]"
    out.print(f"[bold]{result.data_dir}[/]: {status}")
    for kind, problems in result.by_kind().items():
        action = problems[0].action
        colour = {"fixed": "yellow", "error": "red", "rejected": "red"}.get(action, "red")
        out.print(f"[{colour}]{kind}[/] ({action})")
        for p in problems:
            out.print(f"  {p.message}", markup=False, highlight=False)
    table = Table(title="rows per table")
    for col in ("table", "read", "fixed", "rejected", "kept"):
        table.add_column(col, justify="right" if col != "table" else "left")
    for name, c in result.counts.items():
        table.add_row(name, f"{c.read:,}", f"{c.fixed:,}", f"{c.rejected:,}", f"{c.kept:,}")
    out.print(table)


def validate(
    data_dir: Annotated[
        Path,
        typer.Argument(
            help="directory with members/offers/transactions/offer_events as .parquet or .csv"
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    now: Annotated[
        datetime | None,
        typer.Option(help="timestamps after this (naive UTC) are 'future'; default: now"),
    ] = None,
) -> None:
    """Check a data directory; report every problem; exit 1 if any row is rejected."""
    import pandas as pd

    result = validate_dir(data_dir, now=pd.Timestamp(now) if now else None)
    if as_json:
        typer.echo(result.to_json())
    else:
        render_validation(result)
    raise typer.Exit(code=0 if result.ok else 1)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
