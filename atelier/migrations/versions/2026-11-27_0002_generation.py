"""generation chunk leases: worker, dispatched_at and a (status, heartbeat_at) index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import atelier.core.models.base

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generation_chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("dispatched_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_generation_chunks_status_heartbeat", ["status", "heartbeat_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("generation_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_generation_chunks_status_heartbeat")
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("worker")
