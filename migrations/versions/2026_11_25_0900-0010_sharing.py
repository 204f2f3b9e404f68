"""sharing: queues get an entitlement (weight, guarantees, limits) and who last changed them;
jobs record a preemption asked of their agent and how often they were preempted

Revision ID: 0010_sharing
Revises: 0009
Create Date: 2026-11-25 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_sharing"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queues", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weight", sa.Float(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("guarantees", sa.JSON(), server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("limits", sa.JSON(), server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("changed_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preempt_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("preempted_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("preempt_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("preempt_grace_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("preemptions", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("preemptions")
        batch_op.drop_column("preempt_grace_s")
        batch_op.drop_column("preempt_reason")
        batch_op.drop_column("preempted_by")
        batch_op.drop_column("preempt_requested_at")
    with op.batch_alter_table("queues", schema=None) as batch_op:
        batch_op.drop_column("changed_at")
        batch_op.drop_column("changed_by")
        batch_op.drop_column("limits")
        batch_op.drop_column("guarantees")
        batch_op.drop_column("weight")
