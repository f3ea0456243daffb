"""Table definitions of the serving store (SQLAlchemy Core; the migrations create them).

Timestamps are timezone-naive UTC, as in the canonical tables.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

__all__ = ["budgets", "decisions", "feedback_events", "member_caps", "metadata"]

ID_LEN = 64

metadata = MetaData()

decisions = Table(
    "decisions",
    metadata,
    Column("decision_id", String(ID_LEN), primary_key=True),
    Column("member_id", String(ID_LEN), nullable=False),
    Column("channel", String(16), nullable=False),
    # [{"offer_id": ..., "rank": ..., "score": ..., "propensity": ...}, ...]
    Column("offers", JSON, nullable=False),
    Column("model_versions", JSON, nullable=False),
    Column("fallback", String(32), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_decisions_member_created", "member_id", "created_at"),
)

feedback_events = Table(
    "feedback_events",
    metadata,
    Column("event_id", String(ID_LEN), primary_key=True),
    Column("member_id", String(ID_LEN), nullable=False),
    Column("offer_id", String(ID_LEN), nullable=True),
    Column("decision_id", String(ID_LEN), nullable=True),
    Column("event", String(16), nullable=False),
    Column("channel", String(16), nullable=True),
    Column("ts", DateTime, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Index("ix_feedback_member_ts", "member_id", "ts"),
)

budgets = Table(
    "budgets",
    metadata,
    Column("offer_id", String(ID_LEN), primary_key=True),
    Column("budget", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("spent", Float, nullable=False, default=0.0),
    Column("updated_at", DateTime, nullable=False),
)

member_caps = Table(
    "member_caps",
    metadata,
    Column("member_id", String(ID_LEN), primary_key=True),
    Column("cap_key", String(ID_LEN), primary_key=True),  # an offer id, or "surprise"
    Column("period", String(16), primary_key=True),  # e.g. "2026", "2026-W47", "all"
    Column("used", Integer, nullable=False, default=0),
    Column("updated_at", DateTime, nullable=False),
)
