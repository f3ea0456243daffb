"""Alembic environment: runs on the connection handed over by ``serving.store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from serving.store.tables import metadata

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER goes via batch
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # plain ``alembic -c ... upgrade head`` with sqlalchemy.url in the config
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
