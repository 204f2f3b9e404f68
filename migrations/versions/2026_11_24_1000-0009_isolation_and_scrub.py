"""isolation and scrub: a job records the isolation its agent gave it; a device scrubbed
after a job's end is out of placement meanwhile

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("isolation", sa.String(length=20), nullable=True))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scrubbing_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("scrub_job_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("scrub_job_id")
        batch_op.drop_column("scrubbing_since")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("isolation")
