"""Generation jobs over HTTP: submit, list the images, the manifest and archive, and a live stream.

POST /v1/generation-jobs          202 job (200 and the same job for a repeated Idempotency-Key)
GET  /v1/jobs/{id}/images         by index, cursor-paginated, presigned URLs, ?category=
GET  /v1/jobs/{id}/manifest       307 to the JSONL manifest once the job has ended
GET  /v1/jobs/{id}/archive        307 to the ZIP of a job submitted with archive: true
GET  /v1/jobs/{id}/stream         server-sent events: the job object on every change, until it ends
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlalchemy import select

from atelier.api.deps import ReadKey, SessionDep, SettingsDep, StoreDep, SubmitKey, invalid, too_many
from atelier.api.routes.jobs import get_job_or_404
from atelier.api.schemas import JobOut, errors
from atelier.api.submits import IdempotencyKey, checked_webhook_url, repeated, submit_errors
from atelier.core import jobs, ownership
from atelier.core.config import get_settings
from atelier.core.db import session_factory
from atelier.core.models import GeneratedImage, Job
from atelier.core.pagination import MAX_LIMIT, BadCursor, page_after
from atelier.generation import service as generation
from atelier.generation.schemas import GenerationRequest, ImageOut, ImagePage

router = APIRouter(tags=["generation"], responses=errors(401, 403, 404, 413, 422))

# open event streams per key, in this process (a stream is one connection to one API process)
_streams: dict[str, int] = {}

STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0


@router.post(
    "/v1/generation-jobs",
    response_model=JobOut,
    status_code=202,
    responses=repeated(JobOut) | errors(409, 429),
)
def submit_generation(
    body: GenerationRequest,
    key: SubmitKey,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    checked_webhook_url(body.webhook_url, settings, "body", "webhook_url")
    try:
        with submit_errors():
            job, created = generation.submit(
                session=session,
                spec=body,
                settings=settings,
                api_key_id=key.id,
                idempotency_key=idempotency_key,
                request_hash=body.request_hash(),
                model_given="model" in body.model_fields_set,
                quota_key=key,
                viewer=key,
            )
    except generation.InvalidRequest as exc:
        raise invalid("body", exc.field, msg=str(exc)) from exc
    if not created:
        response.status_code = 200
    return JobOut.of(job, key)


def _generate_job(session, job_id: str, key) -> Job:  # noqa: ANN001
    job = get_job_or_404(session, job_id, key=key)
    if job.kind != "generate":
        raise HTTPException(404, detail=f"job {job_id} is a {job.kind} job, not a generation job")
    return job


@router.get("/v1/jobs/{job_id}/images", response_model=ImagePage)
def list_generated_images(
    job_id: str,
    key: ReadKey,
    session: SessionDep,
    store: StoreDep,
    category: str | None = None,
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, description="the next_cursor of the previous page"),
):
    _generate_job(session, job_id, key)
    stmt = select(GeneratedImage).where(GeneratedImage.job_id == job_id)
    if category:
        stmt = stmt.where(GeneratedImage.category == category.strip().lower())
    try:
        rows, next_cursor = page_after(
            stmt, session=session, col=GeneratedImage.index, limit=limit, cursor=cursor
        )
    except BadCursor as exc:
        raise invalid("query", "cursor", msg=str(exc)) from exc
    items = [
        ImageOut.of(row, store.presign(row.key), store.presign(row.tryon_key) if row.tryon_key else None)
        for row in rows
    ]
    return ImagePage(items=items, next_cursor=next_cursor)


def _result_redirect(session, store, key, job_id: str, field: str, what: str) -> RedirectResponse:  # noqa: ANN001
    job = _generate_job(session, job_id, key)
    key = (job.result or {}).get(field)
    if key:
        filename = f"{job_id}-{key.rsplit('/', 1)[-1]}"
        return RedirectResponse(store.presign(key, filename=filename), status_code=307)
    if job.status not in jobs.TERMINAL:
        done, total = job.progress_done, job.progress_total
        raise HTTPException(
            409,
            detail=f"the {what} is written when the job ends; job {job_id} is {job.status} ({done}/{total})",
        )
    if what == "archive" and not (job.params or {}).get("archive"):
        raise HTTPException(404, detail=f"job {job_id} was submitted without `archive: true`")
    raise HTTPException(404, detail=f"job {job_id} ended as {job.status} without a {what}")


@router.get(
    "/v1/jobs/{job_id}/manifest", status_code=307, response_class=RedirectResponse, responses=errors(409)
)
def job_manifest(job_id: str, key: ReadKey, session: SessionDep, store: StoreDep):
    return _result_redirect(session, store, key, job_id, "manifest_key", "manifest")


@router.get(
    "/v1/jobs/{job_id}/archive", status_code=307, response_class=RedirectResponse, responses=errors(409)
)
def job_archive(job_id: str, key: ReadKey, session: SessionDep, store: StoreDep):
    return _result_redirect(session, store, key, job_id, "archive_key", "archive")


def _read_job(job_id: str, viewer) -> tuple[str, str] | None:  # noqa: ANN001
    """(status, JobOut JSON) from a fresh, short, read-only session: a stream holds no connection.
    None when there is no such job or `viewer` may not see it."""
    session = session_factory(readonly=True)()
    try:
        job = session.get(Job, job_id)
        if not ownership.may_see(viewer, job):
            return None
        return job.status, JobOut.of(job, viewer).model_dump_json()
    finally:
        session.close()


@router.get(
    "/v1/jobs/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`event: job` per change"}}
    | errors(429),
)
async def stream_job(job_id: str, request: Request, key: ReadKey):
    # the key's row is detached once the dependency's session closes: keep plain values of it
    key = SimpleNamespace(id=key.id, scopes=list(key.scopes))
    first = await to_thread.run_sync(_read_job, job_id, key)
    if first is None:
        raise HTTPException(404, detail=f"no job with id {job_id!r}")
    release = _reserve_stream(key.id)  # no await between the check and the count: nothing can race it

    async def events():
        async for chunk in _events():
            yield chunk

    async def _events():
        current, last_sent = first, time.monotonic()
        previous = None
        while True:
            status, body = current
            if body != previous:
                yield f"event: job\ndata: {body}\n\n"
                previous, last_sent = body, time.monotonic()
            elif time.monotonic() - last_sent > STREAM_KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            if status in jobs.TERMINAL or await request.is_disconnected():
                return
            await asyncio.sleep(STREAM_POLL_SECONDS)
            current = await to_thread.run_sync(_read_job, job_id, key) or current

    return _CountedStream(
        events(),
        release,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _reserve_stream(key_id: str):  # noqa: ANN202
    """Count one more open stream of the key and of the process, or refuse: 429 past the key's quota,
    503 past the process's cap (streams are not in the request concurrency cap: they last minutes).
    Synchronous on the event loop, so concurrent requests are counted one after another."""
    settings = get_settings()
    limit = settings.quota_event_streams
    if _streams.get(key_id, 0) >= limit:
        raise too_many(
            f"this key has {limit} event streams open, the limit (ATELIER_QUOTA_EVENT_STREAMS)",
            STREAM_POLL_SECONDS * 10,
        )
    if sum(_streams.values()) >= settings.api_max_event_streams:
        raise HTTPException(
            503,
            detail=f"the API has {settings.api_max_event_streams} event streams open, the limit "
            "(ATELIER_API_MAX_EVENT_STREAMS)",
            headers={"Retry-After": str(settings.api_retry_after_seconds)},
        )
    _streams[key_id] = _streams.get(key_id, 0) + 1
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            _streams[key_id] -= 1
            if _streams[key_id] <= 0:
                del _streams[key_id]

    return release


class _CountedStream(StreamingResponse):
    """Gives its stream slot back however the response ends: finished, disconnected, or never started
    (a generator that never runs never reaches its `finally`, so the count is not kept there)."""

    def __init__(self, content, release, **kwargs) -> None:  # noqa: ANN001, ANN003
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
