"""key expiry, per-key webhook signing secrets, and a job ownership index for quotas

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import atelier.core.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("webhook_secret_previous", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "webhook_secret_rotated_at",
                atelier.core.models.base.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_api_key_id_status", ["api_key_id", "status"], unique=False)
        batch_op.create_index("ix_jobs_api_key_id_created_at", ["api_key_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_api_key_id_created_at")
        batch_op.drop_index("ix_jobs_api_key_id_status")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret_rotated_at")
        batch_op.drop_column("webhook_secret_previous")
        batch_op.drop_column("webhook_secret")
        batch_op.drop_column("expires_at")
