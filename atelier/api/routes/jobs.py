from __future__ import annotations

import hashlib
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, HTTPException, Query, Response
from sqlalchemy import select

from atelier.api.deps import ReadKey, SessionDep, SubmitKey, invalid
from atelier.api.key_cache import KeyInfo
from atelier.api.schemas import EventOut, EventPage, JobKind, JobOut, JobPage, JobStatus, errors
from atelier.core import jobs, ownership, units
from atelier.core.db import event_loop_sessions, session_factory
from atelier.core.models import Job, JobEvent
from atelier.core.pagination import MAX_LIMIT, BadCursor, page, page_after

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=errors(401, 403, 413, 422))


def get_job_or_404(session, job_id: str, *, key, for_update: bool = False) -> Job:  # noqa: ANN001
    """The job if `key` may see it (atelier.core.ownership); another key's job is a 404 like a missing one."""
    job = session.get(Job, job_id, with_for_update=for_update)
    if not ownership.may_see(key, job):
        raise HTTPException(404, detail=f"no job with id {job_id!r}")
    return job


@router.get("", response_model=JobPage)
def list_jobs(
    key: ReadKey,
    session: SessionDep,
    kind: JobKind | None = None,
    status: JobStatus | None = None,
    mine: bool = Query(
        False, description="only the jobs this key submitted (what every key but an admin sees anyway)"
    ),
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
):
    stmt = ownership.visible(select(Job), key)
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


def _job_json(job_id: str, sessions, key: KeyInfo) -> bytes:  # noqa: ANN001
    with sessions() as session:
        body = JobOut.of(get_job_or_404(session, job_id, key=key), key).model_dump_json().encode()
        session.commit()  # read-only: ends the read snapshot
    return body


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses={304: {"description": "unchanged since If-None-Match"}} | errors(404, 503),
)
async def get_job(job_id: str, key: ReadKey, if_none_match: Annotated[str | None, Header()] = None):
    # The pollers' path: one short read-only session and no write lock; on SQLite the read runs on
    # the event loop (no thread hop, see atelier.core.db.event_loop_sessions), elsewhere on a thread. 304
    # without a body when the job is unchanged since the client's ETag.
    loop_sessions = event_loop_sessions()
    if loop_sessions is not None:
        body = _job_json(job_id, loop_sessions, key)
    else:
        body = await to_thread.run_sync(_job_json, job_id, session_factory(readonly=True), key)
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/{job_id}/events", response_model=EventPage, responses=errors(404))
def job_events(
    job_id: str,
    key: ReadKey,
    session: SessionDep,
    limit: int = Query(200, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, description="the next_cursor of the previous page"),
):
    get_job_or_404(session, job_id, key=key)
    try:
        rows, next_cursor = page_after(
            select(JobEvent).where(JobEvent.job_id == job_id),
            session=session,
            col=JobEvent.id,
            limit=limit,
            cursor=cursor,
        )
    except BadCursor as exc:
        raise invalid("query", "cursor", msg=str(exc)) from exc
    return EventPage(items=[EventOut.of(e) for e in rows], next_cursor=next_cursor)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=errors(404, 409))
def cancel_job(job_id: str, key: SubmitKey, session: SessionDep):
    job = get_job_or_404(session, job_id, key=key, for_update=True)
    try:
        units.cancel_job(session=session, job=job)
    except jobs.IllegalTransition as exc:
        raise HTTPException(409, detail=f"job {job_id} already ended as {job.status}") from exc
    return JobOut.of(job, key)
