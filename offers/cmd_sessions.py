"""``offers sessions sweep``: release expired grants and abandoned checkout sessions."""

from __future__ import annotations

import json
from typing import Annotated, Any

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
    batch: Annotated[
        int | None,
        typer.Option(
            help="grants or sessions per write transaction, 1-1000 "
            "(default OFFERS_CHECKOUT_SWEEP_BATCH)"
        ),
    ] = None,
    pause: Annotated[
        float | None,
        typer.Option(
            help="seconds between two write transactions, 0-1 "
            "(default OFFERS_CHECKOUT_SWEEP_PAUSE_SECONDS)"
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(help="at most this many expired grants and this many sessions")
    ] = 10_000,
) -> None:
    """Release the budget and cap reservations of grants not redeemed by the end of their
    validity, and of sessions never closed by the till (its answer may never have arrived).
    Safe to run while the service runs, on any number of hosts at once."""
    from serving.settings import get_settings
    from serving.store import open_store
    from serving.store.sessions import check_sweep_options

    settings = get_settings()
    url = store or settings.database_url()
    serving = settings.serving
    after = serving.checkout_open_seconds if open_seconds is None else open_seconds
    batching: dict[str, Any] = {
        "limit": limit,
        "batch": serving.checkout_sweep_batch if batch is None else batch,
        "pause": serving.checkout_sweep_pause_seconds if pause is None else pause,
    }
    try:
        check_sweep_options(**batching)
    except ValueError as exc:  # names the option and the value
        raise typer.BadParameter(str(exc)) from None
    opened = open_store(url, migrate_schema=True)
    try:
        result = opened.sweep_sessions(after, **batching)
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
