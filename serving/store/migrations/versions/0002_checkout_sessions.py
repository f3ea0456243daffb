"""Checkout sessions and grants; member cap keys long enough for "offer:<offer_id>".

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkout_sessions",
        sa.Column("transaction_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("response", sa.JSON, nullable=True),
        sa.Column("client_ts", sa.DateTime, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "ix_checkout_sessions_state_created", "checkout_sessions", ["state", "created_at"]
    )
    op.create_table(
        "grants",
        sa.Column("transaction_id", sa.String(64), primary_key=True),
        sa.Column("offer_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("surprise", sa.Boolean, nullable=False),
        sa.Column("amount", sa.Float, nullable=True),
        sa.Column("caps", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("granted_at", sa.DateTime, nullable=False),
        sa.Column("valid_until", sa.DateTime, nullable=True),
        sa.Column("redeemed_at", sa.DateTime, nullable=True),
        sa.Column("released_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_grants_member", "grants", ["member_id"])
    op.create_index("ix_grants_state_valid", "grants", ["state", "valid_until"])
    if op.get_bind().dialect.name == "postgresql":  # SQLite does not enforce lengths
        op.alter_column("member_caps", "cap_key", type_=sa.String(80), existing_type=sa.String(64))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("member_caps", "cap_key", type_=sa.String(64), existing_type=sa.String(80))
    op.drop_index("ix_grants_state_valid", table_name="grants")
    op.drop_index("ix_grants_member", table_name="grants")
    op.drop_table("grants")
    op.drop_index("ix_checkout_sessions_state_created", table_name="checkout_sessions")
    op.drop_table("checkout_sessions")
