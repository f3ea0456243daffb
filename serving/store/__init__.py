"""Durable serving state in SQL: decisions log, feedback events, budget and cap counters.

SQLite (WAL) is the embedded default; PostgreSQL (psycopg 3) the shared production store.
Schema changes go through Alembic scripts in ``serving/store/migrations``.
"""

from serving.store.connect import StoreConfigError, make_engine
from serving.store.migrate import current_revision, downgrade, head_revision, migrate
from serving.store.reserve import CapKey, GrantOutcome, ReservationItem
from serving.store.store import EventResult, OffersStore, UnknownBudgetError, open_store, utcnow
from serving.store.writer import DecisionLogWriter

__all__ = [
    "CapKey",
    "DecisionLogWriter",
    "EventResult",
    "GrantOutcome",
    "OffersStore",
    "ReservationItem",
    "StoreConfigError",
    "UnknownBudgetError",
    "current_revision",
    "downgrade",
    "head_revision",
    "make_engine",
    "migrate",
    "open_store",
    "utcnow",
]
