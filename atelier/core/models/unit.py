from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.models.base import Base, UTCDateTime, utcnow


class WorkUnit(Base):
    """One unit of queued work of a job: an ingest run, a training segment, a generation chunk, a
    finalize or a webhook delivery. It, not the job row, holds the lease (worker + heartbeat)."""

    __tablename__ = "work_units"
    __table_args__ = (
        UniqueConstraint("job_id", "kind", "seq"),
        Index("ix_work_units_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_work_units_job_kind_status", "job_id", "kind", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    # chunk index, segment number; 0 for a job's single ingest, finalize or webhook unit
    seq: Mapped[int] = mapped_column(Integer, default=0)
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # what this unit covers: a chunk's {"start", "count", "batch_size"}, a webhook's {"event"}
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # work counted from what exists (a chunk: its image rows), summed into the job's progress
    done: Mapped[int] = mapped_column(Integer, default=0)
    # deliveries: claims, capped by ATELIER_MAX_DELIVERIES (a worker that died with it);
    # attempts: failed tries, infrastructure faults included, which never use up the deliveries
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # a stale heartbeat is first suspected, then confirmed a pass later: a database outage delays
    # every heartbeat at once, and must not hand live units to second workers
    suspected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
