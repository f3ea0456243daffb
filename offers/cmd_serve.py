"""``offers serve``: the serving API under uvicorn."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from serving.settings import Settings

__all__ = ["register"]

MULTI_WORKER_SQLITE_LOCK_WAIT = 5.0  # seconds; see shared_sqlite_lock_wait

WORKER_HEALTHCHECK_SECONDS = 60


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default OFFERS_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default OFFERS_PORT)")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="worker processes (each loads the models; they share the SQL store)",
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the offers API (settings from OFFERS_* environment variables)."""
    import uvicorn

    from serving.api import create_app
    from serving.api.limits import uvicorn_options
    from serving.settings import get_settings

    settings = get_settings()
    if not settings.serving.models:  # the service decides with the champions unless told so
        from serving.api.modelset import DEFAULT_MODELS

        serving = settings.serving.model_copy(update={"models": dict(DEFAULT_MODELS)})
        settings = settings.model_copy(update={"serving": serving})
        os.environ["OFFERS_MODELS"] = json.dumps(DEFAULT_MODELS)  # for --workers processes
    bind_host, bind_port = host or settings.serving.host, port or settings.serving.port
    typer.echo(
        f"serving on http://{bind_host}:{bind_port} "
        f"(store: {settings.database_url().split('://', 1)[0]}, workers: {workers})"
    )
    # Header read timeout, keep-alive timeout and connection limit from the OFFERS_* settings
    # (docs/serving.md "Limits, timeouts and metrics"). No access log: paths carry member ids.
    server_options = uvicorn_options(settings)
    if workers == 1:
        uvicorn.run(
            create_app(settings),
            host=bind_host,
            port=bind_port,
            log_level=log_level,
            access_log=False,
            **server_options,
        )
        return
    from serving.api.app import prepare_shared_state

    # What must happen once, not once per worker: migrations, the last-known-good model
    # copies and the budget counters. The workers then skip them.
    prepare_shared_state(settings)
    os.environ["OFFERS_MIGRATE_ON_START"] = "false"
    shared_sqlite_lock_wait(settings)
    # uvicorn kills a worker that does not answer its health ping within this many seconds and
    # starts another; its default (5 s) is shorter than a worker's start (imports, unpickling
    # the models) on a busy machine, and the workers were then restarted forever, never ready.
    uvicorn.run(
        "serving.api.app:create_app",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        host=bind_host,
        port=bind_port,
        log_level=log_level,
        access_log=False,
        **server_options,
    )


def shared_sqlite_lock_wait(settings: Settings) -> None:
    """Workers sharing one SQLite file contend for its single write lock, and SQLite's busy
    handler is not fair: at the one-process default (0.25 s) 3-9% of their commits gave up
    under load (bench/sqlite_lock_wait.py, bench/load.py with 2 workers: 250 of 2,854
    checkouts 503), none at 2 s. Unless OFFERS_STORE_LOCK_WAIT_SECONDS is set, the workers
    wait up to MULTI_WORKER_SQLITE_LOCK_WAIT seconds (a lock held longer still fails). 2 s was
    tried (seventh session): at 1,000 checkouts/s group commits gave up in 6 of 11 runs (1-91
    requests each), at 5 s in none of 7 (docs/serving.md, issue 15 fourth pass); checkout
    admission sheds new requests while a group waits (serving/api/admission.py)."""
    url = settings.database_url()
    if url.startswith("sqlite") and "OFFERS_STORE_LOCK_WAIT_SECONDS" not in os.environ:
        os.environ["OFFERS_STORE_LOCK_WAIT_SECONDS"] = str(MULTI_WORKER_SQLITE_LOCK_WAIT)
        typer.echo(
            f"workers share one SQLite file: store lock wait {MULTI_WORKER_SQLITE_LOCK_WAIT} s "
            "(set OFFERS_STORE_LOCK_WAIT_SECONDS to choose)"
        )


def register(app: typer.Typer) -> None:
    """Add ``offers serve`` to the CLI."""
    app.command("serve")(serve)
