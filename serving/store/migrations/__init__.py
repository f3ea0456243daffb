"""Alembic migration scripts of the serving store (``alembic upgrade head`` via serving.store)."""
