"""usage in memory: devices keep no usage figures or free memory (poold.telemetry serves
them); nodes get a layout generation that moves only when what the node is changes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("usage")
        batch_op.drop_column("memory_free_mib")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("layout_generation", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("layout_generation")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory_free_mib", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("usage", sa.JSON(), server_default="{}", nullable=False))
