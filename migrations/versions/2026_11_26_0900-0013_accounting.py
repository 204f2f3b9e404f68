"""accounting: each allocation keeps the utilisation samples of its device while held

Revision ID: 0013_accounting
Revises: 0012
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_accounting"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("utilization_samples", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("utilization_pct_sum", sa.Float(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_column("utilization_pct_sum")
        batch_op.drop_column("utilization_samples")
