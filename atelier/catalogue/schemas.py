"""Bodies of the catalogue routes: images as listed, the outcome of an upload, the counts."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from atelier.api.schemas import JobOut
from atelier.core.models import CatalogueImage


class CatalogueImageOut(BaseModel):
    id: str
    sha256: str
    category: str
    filename: str
    format: str
    width: int
    height: int
    size_bytes: int
    created_at: datetime
    captured_at: datetime | None = None
    prepared: bool
    # why the photo could not be prepared for training (it is left out of every training), or null
    rejected_reason: str | None = None
    url: str | None = None

    @classmethod
    def of(cls, image: CatalogueImage, url: str | None = None) -> CatalogueImageOut:
        return cls(
            id=image.id,
            sha256=image.sha256,
            category=image.category,
            filename=image.filename,
            format=image.format,
            width=image.width,
            height=image.height,
            size_bytes=image.size_bytes,
            created_at=image.created_at,
            captured_at=image.captured_at,
            prepared=image.prepared_key is not None,
            rejected_reason=image.rejected_reason,
            url=url,
        )


class CataloguePage(BaseModel):
    items: list[CatalogueImageOut]
    next_cursor: str | None


class AcceptedImage(BaseModel):
    id: str
    sha256: str
    category: str
    duplicate: bool


class RejectedFile(BaseModel):
    filename: str
    reason: str


class UploadResult(BaseModel):
    accepted: list[AcceptedImage]
    rejected: list[RejectedFile]
    job: JobOut | None = None


class CatalogueStats(BaseModel):
    total: int
    per_category: dict[str, int]
    per_day: dict[str, int]
    # photos per period of `captured_at` and category: what a trend report sees
    period: str = "month"
    per_period: dict[str, dict[str, int]] = {}
