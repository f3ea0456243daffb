"""``offers serve``: the serving API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register"]


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default OFFERS_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default OFFERS_PORT)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the offers API (settings from OFFERS_* environment variables)."""
    import uvicorn

    from serving.api import create_app
    from serving.settings import get_settings

    settings = get_settings()
    app = create_app(settings)
    typer.echo(
        f"serving on http://{host or settings.host}:{port or settings.port} "
        f"(store: {settings.resolved_database_url().split('://', 1)[0]})"
    )
    # No access log: request paths carry member ids.
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_level=log_level,
        access_log=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``offers serve`` to the CLI."""
    app.command("serve")(serve)
