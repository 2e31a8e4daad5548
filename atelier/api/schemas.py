"""Response and request bodies. ORM rows never leave the API directly: they are mapped here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from atelier.core import jobs as job_states
from atelier.core.models import ApiKey, Job, JobEvent

JobKind = Literal[job_states.KINDS]  # type: ignore[valid-type]
JobStatus = Literal[job_states.STATES]  # type: ignore[valid-type]
Priority = Literal["interactive", "bulk"]


class Progress(BaseModel):
    done: int
    total: int
    info: dict[str, Any] = {}


class JobOut(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    priority: Priority
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
    def of(cls, job: Job, viewer: ApiKey | None = None) -> JobOut:
        """`viewer`: the key asking. Others' jobs show no params (webhook URLs carry tokens)."""
        own = viewer is None or "admin" in viewer.scopes or job.api_key_id == viewer.id
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
            params=(job.params or {}) if own else {},
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


class ErrorOut(BaseModel):
    """Every error: `detail` is a message, or a list of {loc, msg, type} naming the field at fault."""

    model_config = ConfigDict(extra="allow")
    detail: str | list[dict[str, Any]]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each error status it can answer, with the one error body."""
    text = {
        400: "malformed request",
        401: "missing, unknown, revoked or expired API key",
        403: "the key lacks the scope, or the job is another key's",
        404: "not found",
        409: "conflict with the current state",
        413: "body over ATELIER_MAX_JSON_BODY_BYTES / ATELIER_MAX_REQUEST_BYTES",
        422: "invalid input; `detail` names the field",
        429: "per-key quota reached; see Retry-After",
        503: "a service the API needs is failing",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["read", "submit", "catalogue", "admin"]] = Field(min_length=1, max_length=4)
    expires_at: AwareDatetime | None = Field(None, description="optional; the key stops working then")


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool

    @classmethod
    def of(cls, key: ApiKey, *, active: bool) -> KeyOut:
        return cls(
            id=key.id,
            name=key.name,
            scopes=list(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            active=active,
        )


class KeyCreated(KeyOut):
    secret: str = Field(description="the API key; shown only once")
    webhook_secret: str = Field(description="Standard Webhooks signing secret (whsec_...); shown only once")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


class WebhookSecretOut(BaseModel):
    webhook_secret: str = Field(description="the new signing secret; the previous one signs too for a while")
    previous_valid_until: datetime | None
