"""lost nodes and retries: the node state ``down`` is now ``lost``; jobs count their attempts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00

- ``nodes.state``: ``down`` becomes ``lost`` (a node silent past ``nodes.timeout_s``);
- ``jobs.attempt`` (1 for a job as submitted) and ``jobs.retry_of`` (the lost job a retry
  was submitted for).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE nodes SET state = 'lost' WHERE state = 'down'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_retry_of"), ["retry_of"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_jobs_retry_of_jobs"), "jobs", ["retry_of"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_retry_of_jobs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_retry_of"))
        batch_op.drop_column("retry_of")
        batch_op.drop_column("attempt")
    op.execute("UPDATE nodes SET state = 'down' WHERE state = 'lost'")
