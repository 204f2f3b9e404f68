"""gangs: a job over several nodes is stored as its parts, one child job per node

Revision ID: 0011_gangs
Revises: 0010_sharing
Create Date: 2026-11-25 09:00:00

- ``jobs.gang_of``: the job (as submitted) a part belongs to; null for every other job;
- ``jobs.gang_rank``: the part's rank, 0 for the part whose node is ``MASTER_ADDR``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_gangs"
down_revision: str | None = "0010_sharing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gang_of", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("gang_rank", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_gang_of"), ["gang_of"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_jobs_gang_of_jobs"), "jobs", ["gang_of"], ["id"], ondelete="CASCADE")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_gang_of_jobs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_gang_of"))
        batch_op.drop_column("gang_rank")
        batch_op.drop_column("gang_of")
