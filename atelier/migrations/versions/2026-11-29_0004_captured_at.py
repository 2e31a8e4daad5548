"""catalogue photos get captured_at (when the photo was taken or the season it belongs to)

Existing photos are dated by their upload time, which is also the default for new uploads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import atelier.core.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("catalogue_images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("captured_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute("UPDATE catalogue_images SET captured_at = created_at")
    with op.batch_alter_table("catalogue_images", schema=None) as batch_op:
        batch_op.alter_column(
            "captured_at", existing_type=atelier.core.models.base.UTCDateTime(timezone=True), nullable=False
        )
        batch_op.create_index(
            "ix_catalogue_images_captured_category", ["captured_at", "category"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("catalogue_images", schema=None) as batch_op:
        batch_op.drop_index("ix_catalogue_images_captured_category")
        batch_op.drop_column("captured_at")
