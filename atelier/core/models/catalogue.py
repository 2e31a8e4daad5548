from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.models.base import Base, UTCDateTime, new_id, utcnow


class CatalogueImage(Base):
    """One catalogue photo: the original lives in S3 under `key`, deduplicated by content hash."""

    __tablename__ = "catalogue_images"
    __table_args__ = (
        Index("ix_catalogue_images_category_created", "category", "created_at", "id"),
        Index("ix_catalogue_images_captured_category", "captured_at", "category"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    category: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(512))
    prepared_key: Mapped[str | None] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    prepared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Preparation tries started (counted before the work, so a try that killed its worker counts too),
    # and why the photo could not be prepared: a rejected photo is left out of training for good.
    prepare_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rejected_reason: Mapped[str | None] = mapped_column(String(512))
    # when the photo was taken (or the season it belongs to): trend reports group by it
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DatasetSnapshot(Base):
    """The frozen list of catalogue images a training job trains on (manifest in S3)."""

    __tablename__ = "dataset_snapshots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    image_count: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[str]] = mapped_column(JSON)
    manifest_key: Mapped[str] = mapped_column(String(512))
    # resolution (as a string) -> S3 key of the prepared uint8 tensor file
    tensor_keys: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
