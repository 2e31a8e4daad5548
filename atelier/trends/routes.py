"""Trend reports over HTTP.

POST /v1/trend-reports        {"period", "categories", "horizon", "since", "until"} -> 202 trend job
GET  /v1/trend-reports/{id}   {"job", "report", "charts"}: the report (JSON from S3) and presigned chart
                              URLs once the job succeeded; `report` is null until then
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel

from atelier.api.deps import ReadKey, SessionDep, SettingsDep, StoreDep, SubmitKey, invalid
from atelier.api.routes.jobs import get_job_or_404
from atelier.api.schemas import JobOut, errors
from atelier.api.submits import IdempotencyKey, checked_webhook_url, repeated, submit_errors
from atelier.trends import service as trends

router = APIRouter(tags=["trend reports"], responses=errors(401, 403, 413, 422))


class TrendReportOut(BaseModel):
    job: JobOut
    report: dict[str, Any] | None
    charts: dict[str, str]


@router.post(
    "/v1/trend-reports",
    response_model=JobOut,
    status_code=202,
    responses=repeated(JobOut) | errors(409, 429),
)
def submit_trend_report(
    body: trends.TrendParams,
    key: SubmitKey,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    checked_webhook_url(body.webhook_url, settings, "body", "webhook_url")
    try:
        with submit_errors():
            job, created = trends.submit(
                session=session,
                settings=settings,
                params=body,
                api_key_id=key.id,
                idempotency_key=idempotency_key,
                quota_key=key,
            )
    except trends.InvalidRequest as exc:
        raise invalid("body", exc.field, msg=str(exc)) from exc
    if not created:
        response.status_code = 200
    return JobOut.of(job, key)


@router.get("/v1/trend-reports/{job_id}", response_model=TrendReportOut, responses=errors(404))
def get_trend_report(job_id: str, key: ReadKey, session: SessionDep, store: StoreDep):
    job = get_job_or_404(session, job_id, key=key)
    if job.kind != "trend":
        raise HTTPException(404, detail=f"job {job_id} is a {job.kind} job, not a trend report")
    return TrendReportOut(job=JobOut.of(job, key), **trends.view(job=job, store=store))
