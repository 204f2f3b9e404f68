"""placement ledger: node generations, node resources held as allocation rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:15:00

- ``nodes.generation``: moves whenever something placement reads changes, so the scheduler
  reloads only those nodes;
- ``allocations`` gain ``node_id``, ``cpu_cores`` and ``host_memory_mib``; ``device_id`` may be
  null (the row holding a job's CPU cores and host memory). Existing rows get their device's
  node, and each job that holds devices now gets its node row from its job file;
- ``devices.memory_outside_mib``: device memory used by processes that are not poold jobs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory_outside_mib", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cpu_cores", sa.Float(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("host_memory_mib", sa.BigInteger(), server_default="0", nullable=False))
    connection = op.get_bind()
    connection.execute(sa.text("UPDATE allocations SET node_id = (SELECT node_id FROM devices WHERE devices.id = allocations.device_id)"))
    held = connection.execute(
        sa.text("SELECT id, node_id, spec, placed_at FROM jobs WHERE state IN ('assigned', 'running') AND node_id IS NOT NULL")
    ).all()
    for job_id, node_id, spec, placed_at in held:
        resources = (json.loads(spec) if isinstance(spec, str) else spec).get("resources", {})
        connection.execute(
            sa.text(
                "INSERT INTO allocations (job_id, node_id, device_id, share, memory_mib, cpu_cores, host_memory_mib, price_per_hour, created_at)"
                " VALUES (:job, :node, NULL, 0, NULL, :cpu, :mem, 0, :at)"
            ),
            {"job": job_id, "node": node_id, "cpu": float(resources.get("cpu_cores", 0)), "mem": int(resources.get("host_memory", 0)), "at": placed_at},
        )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.alter_column("node_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("device_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(batch_op.f("fk_allocations_node_id_nodes"), "nodes", ["node_id"], ["id"], ondelete="CASCADE")
        batch_op.create_index("ix_allocations_node_id_released_at", ["node_id", "released_at"], unique=False)


def downgrade() -> None:
    connection = op.get_bind()
    connection.execute(sa.text("DELETE FROM allocations WHERE device_id IS NULL"))
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index("ix_allocations_node_id_released_at")
        batch_op.drop_constraint(batch_op.f("fk_allocations_node_id_nodes"), type_="foreignkey")
        batch_op.alter_column("device_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("host_memory_mib")
        batch_op.drop_column("cpu_cores")
        batch_op.drop_column("node_id")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("memory_outside_mib")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("generation")
