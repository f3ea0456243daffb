"""Decisions say whether the member was in the program holdout, the holdout share at the time
(the control arm's propensity) and the campaign they belong to (batch sends), so that
``offers export`` can write ``held_out`` and ``sent`` events with their campaign.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: rows written before this revision do not know (export counts them as unknown)
    op.add_column("decisions", sa.Column("held_out", sa.Boolean, nullable=True))
    op.add_column("decisions", sa.Column("holdout_share", sa.Float, nullable=True))
    op.add_column("decisions", sa.Column("campaign_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("campaign_id")
        batch.drop_column("holdout_share")
        batch.drop_column("held_out")
