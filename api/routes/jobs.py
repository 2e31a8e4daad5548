from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from api.deps import ReadKey, SessionDep, SubmitKey, invalid, owns
from api.schemas import EventOut, EventPage, JobKind, JobOut, JobPage, JobStatus, errors
from core import chunks, jobs
from core.models import Job, JobEvent
from core.pagination import MAX_LIMIT, BadCursor, page

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=errors(401, 403, 413, 422))


def get_job_or_404(session, job_id: str, *, for_update: bool = False) -> Job:  # noqa: ANN001
    job = session.get(Job, job_id, with_for_update=for_update)
    if job is None:
        raise HTTPException(404, detail=f"no job with id {job_id!r}")
    return job


@router.get("", response_model=JobPage)
def list_jobs(
    key: ReadKey,
    session: SessionDep,
    kind: JobKind | None = None,
    status: JobStatus | None = None,
    mine: bool = Query(False, description="only the jobs this key submitted"),
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
):
    stmt = select(Job)
    if kind is not None:
        if kind not in jobs.KINDS:
            raise invalid("query", "kind", msg=f"unknown kind {kind!r}; one of {', '.join(jobs.KINDS)}")
        stmt = stmt.where(Job.kind == kind)
    if status is not None:
        if status not in jobs.STATES:
            raise invalid(
                "query", "status", msg=f"unknown status {status!r}; one of {', '.join(jobs.STATES)}"
            )
        stmt = stmt.where(Job.status == status)
    if mine:
        stmt = stmt.where(Job.api_key_id == key.id)
    try:
        rows, next_cursor = page(
            stmt, session=session, time_col=Job.created_at, id_col=Job.id, limit=limit, cursor=cursor
        )
    except BadCursor as exc:
        raise invalid("query", "cursor", msg=str(exc)) from exc
    return JobPage(items=[JobOut.of(j, key) for j in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=errors(404))
def get_job(job_id: str, key: ReadKey, session: SessionDep):
    return JobOut.of(get_job_or_404(session, job_id), key)


@router.get("/{job_id}/events", response_model=EventPage, responses=errors(404))
def job_events(
    job_id: str,
    _: ReadKey,
    session: SessionDep,
    limit: int = Query(200, ge=1, le=MAX_LIMIT),
    cursor: int | None = Query(None, description="the id of the last event already seen"),
):
    get_job_or_404(session, job_id)
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    if cursor is not None:
        stmt = stmt.where(JobEvent.id > cursor)
    rows = list(session.scalars(stmt.order_by(JobEvent.id).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return EventPage(items=[EventOut.of(e) for e in rows[:limit]], next_cursor=next_cursor)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=errors(404, 409))
def cancel_job(job_id: str, key: SubmitKey, session: SessionDep):
    job = get_job_or_404(session, job_id, for_update=True)
    if not owns(key, job):
        raise HTTPException(
            403, detail=f"job {job_id} belongs to another key: only it or an admin can cancel"
        )
    try:
        jobs.request_cancel(session=session, job=job)
        if job.kind == "generate":
            chunks.cancel_chunks(session=session, job=job)
    except jobs.IllegalTransition as exc:
        raise HTTPException(409, detail=f"job {job_id} already ended as {job.status}") from exc
    return JobOut.of(job, key)
