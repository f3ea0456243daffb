"""Initial tables: decisions, feedback events, budgets, member caps.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("offers", sa.JSON, nullable=False),
        sa.Column("model_versions", sa.JSON, nullable=False),
        sa.Column("fallback", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_decisions_member_created", "decisions", ["member_id", "created_at"])
    op.create_table(
        "feedback_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=True),
        sa.Column("decision_id", sa.String(64), nullable=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_feedback_member_ts", "feedback_events", ["member_id", "ts"])
    op.create_table(
        "budgets",
        sa.Column("offer_id", sa.String(64), primary_key=True),
        sa.Column("budget", sa.Float, nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("spent", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "member_caps",
        sa.Column("member_id", sa.String(64), primary_key=True),
        sa.Column("cap_key", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("member_caps")
    op.drop_table("budgets")
    op.drop_index("ix_feedback_member_ts", table_name="feedback_events")
    op.drop_table("feedback_events")
    op.drop_index("ix_decisions_member_created", table_name="decisions")
    op.drop_table("decisions")
