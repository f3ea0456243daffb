"""``offers export``: the serving store's decisions, grants and feedback as canonical
``offer_events``, merged into a data directory without duplicates (serving.batch.export)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from offers.registry_cli import fail

__all__ = ["StoreOpt", "register", "run_export"]

console = Console(stderr=True)
out = Console()

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        help="serving store URL (sqlite:///path/offers.db or postgresql+psycopg://...); "
        "default: $OFFERS_DATABASE_URL",
        envvar="OFFERS_DATABASE_URL",
        show_envvar=False,
    ),
]
SinceOpt = Annotated[
    datetime | None,
    typer.Option(help="only decisions, grants and feedback at or after this time (naive UTC)"),
]


def run_export(store_url: str, out_dir: Path, since: datetime | None = None) -> Any:
    """Export the store at ``store_url`` into ``out_dir``; returns the
    :class:`serving.batch.export.ExportResult`. Exits 1 with a message on error."""
    from serving.batch.export import ExportError, export_from_url

    try:
        return export_from_url(store_url, out_dir, since)
    except ExportError as exc:
        fail(str(exc))


def render_export(result: Any) -> None:
    """Counts read from the store and of events written / already present."""
    t = Table(title=f"offer_events -> {result.path}")
    t.add_column("")
    t.add_column("rows", justify="right")
    for table, n in result.read.items():
        t.add_row(f"read: {table}", f"{n:,}")
    for event, n in result.events.items():
        t.add_row(f"event: {event}", f"{n:,}")
    t.add_row("[bold]written[/]", f"{result.written:,}")
    t.add_row("already present", f"{result.already_present:,}")
    t.add_row("offer_events in the directory", f"{result.total:,}")
    out.print(t)
    if result.unknown_holdout:
        console.print(
            f"[yellow]note:[/] {result.unknown_holdout:,} decisions without offers were stored "
            "before the holdout was recorded (store revision < 0003): not exported"
        )


def export(
    store: StoreOpt,
    out_dir: Annotated[
        Path, typer.Option("--out", help="canonical data directory to merge offer_events into")
    ],
    since: SinceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
) -> None:
    """Write the serving store's decisions (sent, held_out), checkout grants and feedback
    (viewed, redeemed, dismissed) into OUT as canonical offer_events. Event ids derive from the
    decision, the offer and the event, so re-running adds no duplicates."""
    if not store:
        fail("--store: give the serving store URL (or set OFFERS_DATABASE_URL)")
    result = run_export(store, out_dir, since)
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    render_export(result)


def register(app: typer.Typer) -> None:
    """Add ``offers export`` to the CLI."""
    app.command("export")(export)
