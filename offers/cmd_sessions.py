"""``offers sessions sweep``: release expired grants and abandoned checkout sessions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from offers.cli import command_group

__all__ = ["register"]


def sweep_command(
    store: Annotated[
        str | None,
        typer.Option(help="store URL (default: OFFERS_DATABASE_URL or the SQLite file)"),
    ] = None,
    open_seconds: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="cancel sessions still open this long after checkout "
            "(default OFFERS_CHECKOUT_OPEN_SECONDS)",
        ),
    ] = None,
) -> None:
    """Release the budget and cap reservations of grants not redeemed by the end of their
    validity, and of sessions never closed by the till (its answer may never have arrived).
    Safe to run while the service runs, on any number of hosts at once."""
    from serving.settings import get_settings
    from serving.store import open_store

    settings = get_settings()
    url = store or settings.database_url()
    limit = settings.serving.checkout_open_seconds if open_seconds is None else open_seconds
    opened = open_store(url, migrate_schema=True)
    try:
        result = opened.sweep_sessions(limit)
    finally:
        opened.close()
    typer.echo(
        json.dumps(
            {
                "expired_grants_released": result.expired_grants,
                "abandoned_sessions_cancelled": result.abandoned_sessions,
                "abandoned_grants_released": result.released_grants,
            }
        )
    )


def register(app: typer.Typer) -> None:
    group = command_group(app, "sessions", "Checkout sessions: the sweep.")
    group.command("sweep")(sweep_command)
