"""Table definitions of the serving store (SQLAlchemy Core; the migrations create them).

Timestamps are timezone-naive UTC, as in the canonical tables.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

__all__ = [
    "budgets",
    "checkout_sessions",
    "decisions",
    "feedback_events",
    "grants",
    "member_caps",
    "metadata",
]

ID_LEN = 64
CAP_KEY_LEN = 80  # "offer:" + an id

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
    # program holdout member (no personalised offers) and the holdout share then (the control
    # arm's propensity); None on rows stored before revision 0003
    Column("held_out", Boolean, nullable=True),
    Column("holdout_share", Float, nullable=True),
    Column("campaign_id", String(ID_LEN), nullable=True),  # batch sends; None: API decisions
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
    # "surprise", "offer:<offer_id>" (lifetime per_member_cap) or "channel:<channel>"
    Column("cap_key", String(CAP_KEY_LEN), primary_key=True),
    Column("period", String(16), primary_key=True),  # e.g. "2026", "2026-W47", "all"
    Column("used", Integer, nullable=False, default=0),
    Column("updated_at", DateTime, nullable=False),
)

# A checkout transaction (the till's id): its decision, the stored answer and its state
# (open -> closed -> cancelled / partially_returned; see serving.store.sessions).
checkout_sessions = Table(
    "checkout_sessions",
    metadata,
    Column("transaction_id", String(ID_LEN), primary_key=True),
    Column("member_id", String(ID_LEN), nullable=False),
    Column("decision_id", String(ID_LEN), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("state", String(24), nullable=False),
    Column("response", JSON, nullable=True),  # the answer given (and given again on a retry)
    Column("client_ts", DateTime, nullable=True),  # the till's clock, recorded only
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_checkout_sessions_state_created", "state", "created_at"),
)

# One row per granted reward: what it reserved (budget amount, cap counters) so a cancel or the
# sweep can give back exactly that.
grants = Table(
    "grants",
    metadata,
    Column("transaction_id", String(ID_LEN), primary_key=True),
    Column("offer_id", String(ID_LEN), primary_key=True),
    Column("member_id", String(ID_LEN), nullable=False),
    Column("decision_id", String(ID_LEN), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("surprise", Boolean, nullable=False),
    Column("amount", Float, nullable=True),  # reserved on the offer's budget; None: none
    Column("caps", JSON, nullable=False),  # [[cap_key, period], ...] counted
    Column("state", String(16), nullable=False),  # granted | redeemed | released | expired
    Column("granted_at", DateTime, nullable=False),
    Column("valid_until", DateTime, nullable=True),  # None: the offer never expires
    Column("redeemed_at", DateTime, nullable=True),
    Column("released_at", DateTime, nullable=True),
    Index("ix_grants_member", "member_id"),
    Index("ix_grants_state_valid", "state", "valid_until"),
)
