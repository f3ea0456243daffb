"""Engine construction: SQLite (WAL) as the embedded default, PostgreSQL via psycopg 3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["StoreConfigError", "make_engine"]

SUPPORTED = ("sqlite", "postgresql")


class StoreConfigError(ValueError):
    """The database URL names an unsupported backend or an unusable location."""


def make_engine(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 10,
    lock_wait_seconds: float = 30.0,
) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite files get WAL, a busy timeout and fsync policy.

    ``lock_wait_seconds`` is SQLite's busy timeout: how long a statement waits for the write
    lock held by another connection or process before failing with "database is locked".
    Batch commands keep the default 30 s; the serving process passes its
    ``store_lock_wait_seconds`` setting (0.25 s), so a request answers 503 quickly instead of
    waiting. ``sqlite_synchronous="FULL"`` makes a commit durable before it returns (an acknowledged
    feedback event survives a crash of the process and of the machine); ``NORMAL`` in WAL mode
    survives a crash of the process only.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise StoreConfigError(
            f"OFFERS_DATABASE_URL: backend {backend!r} is not supported; use one of {SUPPORTED}"
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    # hide_parameters: bound values (member ids) never appear in errors or logs.
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StoreConfigError(
                "OFFERS_DATABASE_URL: an in-memory SQLite database is not shared between "
                "connections; give a file path"
            )
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        if not 0 < lock_wait_seconds <= 3600:
            raise StoreConfigError(
                f"lock_wait_seconds: {lock_wait_seconds!r} is not in (0, 3600] seconds"
            )
        kwargs.update(
            connect_args={"timeout": lock_wait_seconds}, pool_size=pool_size, max_overflow=10
        )
    else:
        kwargs.update(pool_size=pool_size, max_overflow=10)
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        _sqlite_pragmas(engine, sqlite_synchronous, round(lock_wait_seconds * 1000))
    return engine


def _sqlite_pragmas(engine: Engine, synchronous: str, busy_timeout_ms: int) -> None:
    if synchronous not in ("NORMAL", "FULL"):
        raise StoreConfigError(f"sqlite_synchronous: {synchronous!r} is not NORMAL or FULL")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()
