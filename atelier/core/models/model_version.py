from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.models.base import Base, UTCDateTime, new_id, utcnow


class ModelVersion(Base):
    """A trained generator checkpoint in the registry. At most one row has is_production true: a partial
    unique index enforces it in SQL, so two concurrent promotes cannot both win."""

    __tablename__ = "model_versions"
    __table_args__ = (
        Index(
            "uq_model_versions_one_production",
            "is_production",
            unique=True,
            sqlite_where=text("is_production"),
            postgresql_where=text("is_production"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    arch: Mapped[str] = mapped_column(String(32))
    preset: Mapped[str] = mapped_column(String(32))
    resolution: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[str]] = mapped_column(JSON)
    is_production: Mapped[bool] = mapped_column(Boolean, default=False)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_key: Mapped[str] = mapped_column(String(512))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    grid_key: Mapped[str | None] = mapped_column(String(512))
    loss_curve_key: Mapped[str | None] = mapped_column(String(512))
    dataset_snapshot_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset_snapshots.id", ondelete="SET NULL")
    )
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
