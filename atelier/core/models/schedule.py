from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.models.base import Base, UTCDateTime, utcnow


class Schedule(Base):
    """A cron schedule such as `nightly-retrain`; beat fires the due ones."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    cron: Mapped[str] = mapped_column(String(120))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    """One firing of a schedule. `run_key` (name + scheduled time) is unique, so two beats that see the
    same due time insert one row between them and only the winner starts a job."""

    __tablename__ = "schedule_runs"

    run_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    schedule_name: Mapped[str] = mapped_column(ForeignKey("schedules.name", ondelete="CASCADE"), index=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    outcome: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
