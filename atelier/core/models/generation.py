from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.models.base import Base, UTCDateTime, utcnow


class GeneratedImage(Base):
    """One generated design; upserted on (job, index) so a re-delivered chunk adds no duplicate."""

    __tablename__ = "generated_images"
    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        Index("ix_generated_images_job_category_index", "job_id", "category", "index"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    model_version_id: Mapped[str | None] = mapped_column(String(32))
    tryon_key: Mapped[str | None] = mapped_column(String(512))  # the stored try-on preview, if asked
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
