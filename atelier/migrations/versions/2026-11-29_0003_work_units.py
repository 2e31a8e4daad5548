"""one table of leased work: work_units replaces generation_chunks and the job-row leases

Every unit of queued work (ingest, training segment, generation chunk, finalize, webhook) is a row
here; jobs lose their worker / heartbeat_at / dispatched_at lease columns. Chunks are carried over,
and each unfinished ingest or training job gets one queued unit, which the reconciler sends.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 08:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import atelier.core.models.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE_OF_PRIORITY = {"interactive": "generate.interactive", "bulk": "generate.bulk"}


def upgrade() -> None:
    units = op.create_table(
        "work_units",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("heartbeat_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("suspected_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("not_before", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_work_units_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_units")),
        sa.UniqueConstraint("job_id", "kind", "seq", name=op.f("uq_work_units_job_id")),
    )
    with op.batch_alter_table("work_units", schema=None) as batch_op:
        batch_op.create_index("ix_work_units_status_heartbeat", ["status", "heartbeat_at"], unique=False)
        batch_op.create_index("ix_work_units_job_kind_status", ["job_id", "kind", "status"], unique=False)

    bind = op.get_bind()
    now = datetime.now(UTC)
    rows = []
    for r in bind.execute(
        sa.text(
            'SELECT c.job_id, c."index", c.start, c.count, c.status, c.deliveries, c.batch_size, c.error,'
            " c.started_at, c.finished_at, j.priority FROM generation_chunks c JOIN jobs j ON j.id = c.job_id"
        )
    ).mappings():
        open_ = r["status"] in ("queued", "running")
        rows.append(
            {
                "job_id": r["job_id"],
                "kind": "chunk",
                "seq": r["index"],
                "queue": QUEUE_OF_PRIORITY.get(r["priority"], "generate.bulk"),
                "status": "queued" if open_ else r["status"],
                "spec": {"start": r["start"], "count": r["count"], "batch_size": r["batch_size"]},
                "done": 0,
                "deliveries": r["deliveries"],
                "attempts": 0,
                "error": r["error"],
                "created_at": now,
                "started_at": r["started_at"],
                "finished_at": None if open_ else r["finished_at"],
            }
        )
    for r in bind.execute(
        sa.text(
            "SELECT id, kind FROM jobs WHERE kind IN ('ingest', 'train') AND status IN ('queued', 'running')"
        )
    ).mappings():
        kind = r["kind"]
        rows.append(
            {
                "job_id": r["id"],
                "kind": kind,
                "seq": 0,
                "queue": "io" if kind == "ingest" else "train",
                "status": "queued",
                "spec": {},
                "done": 0,
                "deliveries": 0,
                "attempts": 0,
                "error": None,
                "created_at": now,
                "started_at": None,
                "finished_at": None,
            }
        )
    if rows:
        op.bulk_insert(units, rows)

    op.drop_table("generation_chunks")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_heartbeat")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("worker")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("dispatched_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("heartbeat_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_jobs_status_heartbeat", ["status", "heartbeat_at"], unique=False)
    op.create_table(
        "generation_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("dispatched_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", atelier.core.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_generation_chunks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_chunks")),
        sa.UniqueConstraint("job_id", "index", name=op.f("uq_generation_chunks_job_id")),
    )
    op.drop_table("work_units")
