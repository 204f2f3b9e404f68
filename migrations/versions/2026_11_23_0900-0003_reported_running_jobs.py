"""reported running jobs: what the node's agent said it runs in its last heartbeat

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00

``nodes.running_jobs`` (a JSON list of job ids) lets the daemon tell the agent to kill the
jobs it runs that the daemon no longer holds on that node (ended by force, lost, unknown).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("running_jobs", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("running_jobs")
