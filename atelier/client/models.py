"""The API's response bodies as the client reads them: one pydantic model per body, field for field.

They are the contract: tests/unit/test_client_contract.py compares each with the schema that the
server's OpenAPI document publishes, so a field added, dropped or retyped on either side fails a test.
Fields the server adds later are ignored by an older client rather than refused.

Results can also be read like the dicts the API sends, for scripts written that way: `job["status"]`,
`"error" in job`, `job.get("error")`, `{**image}`, and `image == {...}` compares with the JSON form.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

JobKind = Literal["ingest", "train", "generate", "trend"]
JobStatus = Literal["queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled"]
Priority = Literal["interactive", "bulk"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "partially_succeeded", "failed", "cancelled"})

T = TypeVar("T")


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # ---- read like the JSON object it came from
    def __getitem__(self, name: str) -> Any:
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in type(self).model_fields

    def keys(self) -> list[str]:
        return list(type(self).model_fields)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in type(self).model_fields else default

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.model_dump(mode="json") == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


class Page(ApiModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# ---------------------------------------------------------------- jobs


class Progress(ApiModel):
    done: int
    total: int
    info: dict[str, Any] = {}


class Job(ApiModel):
    """GET /v1/jobs/{id}: every job kind has this shape; `params` and `result` depend on the kind."""

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

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class JobEvent(ApiModel):
    id: int
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None


# ---------------------------------------------------------------- generation


class GeneratedImage(ApiModel):
    id: str
    index: int
    seed: int
    category: str
    key: str
    url: str
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int
    tryon_url: str | None = None

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class ManifestEntry(ApiModel):
    """One line of a generation job's manifest.jsonl."""

    index: int
    seed: int
    category: str
    key: str
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int
    model_version: str | None = None


class DownloadReport(ApiModel):
    downloaded: int = 0
    skipped: int = 0  # already there with the right sha256
    failed: int = 0
    bytes: int = 0  # fetched now
    failures: list[str] = []  # file names, with the reason


# ---------------------------------------------------------------- models and schedules


class ModelVersion(ApiModel):
    id: str
    arch: str
    preset: str
    resolution: int
    class_names: list[str]
    production: bool
    steps: int
    metrics: dict[str, Any] | None
    dataset_snapshot_id: str | None
    parent_id: str | None
    job_id: str | None
    created_at: datetime
    promoted_at: datetime | None
    grid_url: str | None = None
    loss_curve_url: str | None = None
    lineage: list[str] | None = None


class ScheduleRun(ApiModel):
    run_key: str
    scheduled_for: datetime
    job_id: str | None
    outcome: str | None


class Schedule(ApiModel):
    name: str
    cron: str
    enabled: bool
    params: dict[str, Any]
    next_run_at: datetime | None
    last_runs: list[ScheduleRun] = []


# ---------------------------------------------------------------- catalogue


class CatalogueImage(ApiModel):
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
    rejected_reason: str | None = None
    url: str | None = None


class AcceptedImage(ApiModel):
    id: str
    sha256: str
    category: str
    duplicate: bool


class RejectedFile(ApiModel):
    filename: str
    reason: str


class UploadResult(ApiModel):
    """What one upload request did; `job` is the ingest job of the new photos (None when none was new)."""

    accepted: list[AcceptedImage]
    rejected: list[RejectedFile]
    job: Job | None = None


class CatalogueStats(ApiModel):
    total: int
    per_category: dict[str, int]
    per_day: dict[str, int]
    period: str = "month"
    per_period: dict[str, dict[str, int]] = {}


class FolderUpload(ApiModel):
    """The sum of the requests of one folder upload; `jobs` are their ingest jobs."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[RejectedFile] = []
    jobs: list[Job] = []


# ---------------------------------------------------------------- trend reports


class TrendReport(ApiModel):
    """`report` and `charts` (presigned PNG URLs) once the job succeeded; None and {} before."""

    job: Job
    report: dict[str, Any] | None
    charts: dict[str, str]


# ---------------------------------------------------------------- keys


class ApiKey(ApiModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool


class CreatedKey(ApiKey):
    secret: str  # the API key itself: shown only once
    webhook_secret: str  # its Standard Webhooks signing secret (whsec_...): shown only once


class WebhookSecret(ApiModel):
    webhook_secret: str
    previous_valid_until: datetime | None


# ---------------------------------------------------------------- notifications


class WebhookEvent(ApiModel):
    """The body of every webhook: `type` is job.succeeded, job.partially_succeeded, job.failed or
    job.cancelled; `data` the job as GET /v1/jobs/{id} shows it to its owner."""

    type: str
    timestamp: datetime
    data: Job
