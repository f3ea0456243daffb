"""``offers catalog check FILE``: validate an offer catalog and show its offers by kind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, JustifyMethod
from rich.table import Table

console = Console()
catalog_app = typer.Typer(help="Offer catalogs (YAML) written by program managers.")


@catalog_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="catalog YAML file")],
) -> None:
    """Validate a catalog; print its offers by kind, or every error and exit 1."""
    from features.catalog.model import CatalogError, load_catalog
    from features.sources.schema import OFFER_KINDS

    try:
        catalog = load_catalog(file)
    except CatalogError as exc:
        console.print(f"[red]{file}: {len(exc.errors)} error(s)[/]")
        for line in exc.errors:
            console.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(code=1) from None
    frame = catalog.to_offers_frame()
    table = Table(title=f"{catalog.program or file.name}: {len(frame)} offers")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("kind", "left"),
        ("offers", "right"),
        ("surprise", "right"),
        ("ids", "left"),
    )
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for kind in OFFER_KINDS:
        rows = frame[frame["kind"] == kind]
        if len(rows):
            ids = ", ".join(rows["offer_id"])
            table.add_row(kind, str(len(rows)), str(int(rows["surprise"].sum())), ids)
    console.print(table)
    missing = [k for k in OFFER_KINDS if k not in set(frame["kind"])]
    if missing:
        console.print(f"kinds without offers: {', '.join(missing)}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
