"""device quarantine: a device that was unhealthy stays out of placement for a while, or until
an administrator returns it when it flaps

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("quarantine_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("quarantine_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("quarantine_held", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("unhealthy_reports", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("unhealthy_reports")
        batch_op.drop_column("quarantine_held")
        batch_op.drop_column("quarantine_until")
        batch_op.drop_column("quarantine_reason")
        batch_op.drop_column("quarantined_at")
