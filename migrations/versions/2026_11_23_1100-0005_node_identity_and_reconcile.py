"""node identity and reconciling returning agents

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 11:00:00

- ``nodes.machine_id``: the machine whose agent holds the node's name; another machine may
  take the name only once the node is lost;
- ``jobs.unreported_since``: a running job its agent's heartbeats stopped listing, since when
  (it is lost after ``nodes.timeout_s``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("machine_id", sa.String(length=200), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unreported_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("unreported_since")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("machine_id")
