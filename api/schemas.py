"""Response and request bodies. ORM rows never leave the API directly: they are mapped here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from core.models import CatalogueImage, Job, JobEvent


class Progress(BaseModel):
    done: int
    total: int
    info: dict[str, Any] = {}


class JobOut(BaseModel):
    id: str
    kind: str
    status: str
    priority: str
    progress: Progress
    eta_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    deliveries: int

    @classmethod
    def of(cls, job: Job) -> JobOut:
        info = {k: v for k, v in (job.progress_info or {}).items() if not k.startswith("_")}
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            priority=job.priority,
            progress=Progress(done=job.progress_done, total=job.progress_total, info=info),
            eta_seconds=round(job.eta_seconds, 1) if job.eta_seconds is not None else None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            params=job.params or {},
            result=job.result,
            error=job.error,
            cancel_requested=job.cancel_requested,
            deliveries=job.deliveries,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event: JobEvent) -> EventOut:
        return cls(id=event.id, at=event.at, kind=event.kind, message=event.message, data=event.data)


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


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
