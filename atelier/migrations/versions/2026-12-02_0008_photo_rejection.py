"""catalogue photos get prepare_attempts and rejected_reason: a photo that cannot be prepared is
rejected and left out of training instead of being retried forever

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("catalogue_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prepare_attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("rejected_reason", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("catalogue_images", schema=None) as batch_op:
        batch_op.drop_column("rejected_reason")
        batch_op.drop_column("prepare_attempts")
