"""Durable serving state in SQL: decisions log, feedback events, budget and cap counters,
checkout sessions and their grants.

SQLite (WAL) is the embedded default; PostgreSQL (psycopg 3) the shared production store.
Schema changes go through Alembic scripts in ``serving/store/migrations``.
"""

from serving.store.connect import StoreConfigError, make_engine
from serving.store.migrate import current_revision, downgrade, head_revision, migrate
from serving.store.reserve import CapKey, GrantOutcome, GrantRequest, ReservationItem, SessionRecord
from serving.store.sessions import (
    IllegalTransition,
    SessionChange,
    SweepResult,
    UnknownOffers,
    UnknownSession,
)
from serving.store.store import EventResult, OffersStore, UnknownBudgetError, open_store, utcnow
from serving.store.writer import DecisionLogWriter

__all__ = [
    "CapKey",
    "DecisionLogWriter",
    "EventResult",
    "GrantOutcome",
    "GrantRequest",
    "IllegalTransition",
    "OffersStore",
    "ReservationItem",
    "SessionChange",
    "SessionRecord",
    "StoreConfigError",
    "SweepResult",
    "UnknownBudgetError",
    "UnknownOffers",
    "UnknownSession",
    "current_revision",
    "downgrade",
    "head_revision",
    "make_engine",
    "migrate",
    "open_store",
    "utcnow",
]
