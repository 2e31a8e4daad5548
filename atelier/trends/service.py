"""Trend report jobs: the request, validated once and stored as the job's params, and the report view.

POST /v1/trend-reports ──> submit() ──> job(kind="trend", params=TrendParams) ──> atelier.trend_report
GET  /v1/trend-reports/{id} ──> view(): the job, and once it succeeded the JSON report from S3 with
                                 presigned URLs of its charts
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, HttpUrl, field_validator
from sqlalchemy.orm import Session

from atelier.catalogue.service import normalize_category
from atelier.core import idempotency, jobs, ownership, quotas, units
from atelier.core.config import Settings
from atelier.core.models import Job
from atelier.core.storage import ObjectStore


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class TrendParams(BaseModel):
    period: Literal["week", "month", "season"] = "month"
    categories: list[str] | None = Field(None, max_length=64, description="default: every category")
    horizon: int = Field(3, ge=1, description="periods to forecast; at most ATELIER_TREND_MAX_HORIZON")
    since: datetime | None = Field(None, description="photos captured at or after")
    until: datetime | None = Field(None, description="photos captured before")
    webhook_url: HttpUrl | None = Field(None, description="POSTed a signed job event when the report ends")

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: list[str] | None) -> list[str] | None:
        return sorted({normalize_category(c) for c in v}) if v else None


class FollowReport(BaseModel):
    """A generation request that follows a trend report (the `follow_report` field)."""

    report: str = Field(min_length=1, max_length=64, description="the trend report's job id")
    count: int | None = Field(None, ge=1, description="split over the categories by the forecast mix")
    palette: bool = Field(False, description="recolour to the report's rising palette")


def split_count(count: int, shares: dict[str, float]) -> dict[str, int]:
    """`count` images over categories in proportion to `shares` (largest remainder: the sum is exact)."""
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("the forecast mix is empty")
    exact = {k: count * v / total for k, v in shares.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[: count - sum(out.values())]:
        out[k] += 1
    return {k: v for k, v in sorted(out.items()) if v > 0}


def follow(
    *,
    session: Session,
    request: FollowReport,
    viewer=None,  # noqa: ANN001
) -> tuple[dict[str, int] | None, list[str] | None]:
    """(per_category, recolour palette) from a succeeded trend report; InvalidRequest naming the field.
    Another key's report is as unknown as a missing one (`viewer` None: the product itself)."""
    job = session.get(Job, request.report)
    hidden = viewer is not None and not ownership.may_see(viewer, job)
    if job is None or hidden or job.kind != "trend":
        raise InvalidRequest("follow_report", f"no trend report with id {request.report!r}")
    if job.status != jobs.SUCCEEDED:
        raise InvalidRequest(
            "follow_report", f"trend report {job.id} is {job.status}; follow one that succeeded"
        )
    summary = (job.result or {}).get("summary", {})
    per_category = split_count(request.count, summary["next_mix"]) if request.count else None
    palette = None
    if request.palette:
        palette = summary.get("rising_palette", [])[:8]
        if not palette:
            raise InvalidRequest(
                "follow_report", f"trend report {job.id} found no rising colour to recolour to"
            )
    return per_category, palette


def report_key(job_id: str, name: str) -> str:
    return f"trends/{job_id}/{name}"


def submit(
    *,
    session: Session,
    settings: Settings,
    params: TrendParams,
    api_key_id: str | None,
    idempotency_key: str | None = None,
    quota_key=None,  # noqa: ANN001 - the submitting key: its trend quota is checked
) -> tuple[Job, bool]:
    """(job, created); a repeated Idempotency-Key answers with the first job (before any quota)."""
    scoped = idempotency.scoped(api_key_id, idempotency_key)
    body = params.model_dump(mode="json")
    body_hash = idempotency.request_hash(body) if scoped else None
    earlier = idempotency.existing(session, scoped, body_hash)
    if earlier is not None:
        return earlier, False
    if params.horizon > settings.trend_max_horizon:
        raise InvalidRequest(
            "horizon",
            f"horizon {params.horizon} is over ATELIER_TREND_MAX_HORIZON={settings.trend_max_horizon}",
        )
    if params.since and params.until and params.since >= params.until:
        raise InvalidRequest("until", "until must be later than since")
    if quota_key is not None:
        quotas.check_submit(session=session, key=quota_key, settings=settings, kind="trend")
    job, created = idempotency.create_once(
        session,
        scoped,
        body_hash,
        lambda: jobs.create_job(
            session=session,
            kind="trend",
            params=body,
            api_key_id=api_key_id,
            idempotency_key=scoped,
            request_hash=body_hash,
        ),
    )
    if created:
        units.start_work(session, job)
    return job, created


def view(*, job: Job, store: ObjectStore) -> dict[str, Any]:
    """The report and its charts' presigned URLs once the job succeeded; None before."""
    result = job.result or {}
    if job.status != jobs.SUCCEEDED or "report_key" not in result:
        return {"report": None, "charts": {}}
    report = json.loads(store.get(result["report_key"]))
    charts = {name: store.presign(key) for name, key in sorted(result.get("chart_keys", {}).items())}
    return {"report": report, "charts": charts}
