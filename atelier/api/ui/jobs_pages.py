"""Gallery pages for jobs and their images.

GET  /ui/login, POST /ui/login, POST /ui/logout
GET  /ui/jobs                          newest first, cursor pages, kind/status filters
GET  /ui/jobs/{id}                     progress, ETA, events; live over /ui/jobs/{id}/stream
POST /ui/jobs/{id}/cancel
GET  /ui/jobs/{id}/images              thumbnail grid: ?category=&cursor= (keyset on the index)
GET  /ui/jobs/{id}/images/{index}      full size, provenance, downloads, "variations of this"
GET  /ui/thumbs/{id}/{index}           302 to the thumbnail's presigned URL (made on first view)
GET  /ui/jobs/{id}/manifest|archive    303 to the presigned file
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from atelier.api import key_cache
from atelier.api.deps import SessionDep, SettingsDep, StoreDep
from atelier.api.routes import jobs as job_routes
from atelier.api.schemas import JobOut
from atelier.api.ui.render import render
from atelier.api.ui.session import (
    COOKIE,
    Csrf,
    UiRead,
    UiSubmit,
    end_session,
    key_of_token,
    origin_of,
    set_session_cookie,
    start_session,
)
from atelier.api.ui.thumbs import ensure_thumbnail
from atelier.core import auth, jobs
from atelier.core.models import GeneratedImage
from atelier.generation import routes as generation_routes

router = APIRouter(prefix="/ui", include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # only paths inside the gallery: never an open redirect to another site
    return target if target and target.startswith("/ui/") and not target.startswith("//") else "/ui/jobs"


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/login")
def login_page(request: Request, session: SessionDep, next: str | None = None):  # noqa: A002
    if key_of_token(session, request.cookies.get(COOKIE)):
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", next=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    api_key: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form()] = "/ui/jobs",  # noqa: A002
):
    origin = request.headers.get("origin")
    if origin and origin != origin_of(request):
        # a sign-in form posted from another site would sign this browser in to the attacker's key
        raise HTTPException(403, detail="sign-in is only accepted from this site's own form")
    secret = api_key.strip()
    # a string not shaped like an issued key is refused without a query (key_cache.well_formed)
    key = auth.find_key(session=session, secret=secret) if key_cache.well_formed(secret) else None
    if key is None or not auth.has_scope(key, "read"):
        error = "unknown or revoked API key" if key is None else "this API key lacks the `read` scope"
        return render(request, "login.html", status_code=401, next=_safe_next(next), error=error)
    response = RedirectResponse(_safe_next(next), status_code=303)
    set_session_cookie(response, request, start_session(session, key))
    return response


@router.post("/logout")
def logout(request: Request, _: UiRead, __: Csrf, session: SessionDep) -> RedirectResponse:
    end_session(session, request.cookies.get(COOKIE))  # the cookie, replayed, signs nobody in
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("/jobs")
def jobs_page(
    request: Request,
    key: UiRead,
    session: SessionDep,
    kind: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    fragment: bool = False,
):
    page = job_routes.list_jobs(
        key=key,
        session=session,
        kind=kind or None,
        status=status or None,
        mine=False,
        limit=25,
        cursor=cursor,
    )
    name = "jobs_rows.html" if fragment else "jobs.html"
    return render(
        request, name, key, page=page, kind=kind, status=status, kinds=jobs.KINDS, states=jobs.STATES
    )


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, key: UiRead, session: SessionDep):
    job = JobOut.of(job_routes.get_job_or_404(session, job_id, key=key), key)
    events = job_routes.job_events(job_id=job_id, key=key, session=session, limit=200, cursor=None)
    return render(request, "job.html", key, job=job, events=events.items, terminal=jobs.TERMINAL)


@router.get("/jobs/{job_id}/stream")
async def job_stream(job_id: str, request: Request, key: UiRead):
    # the API's own event stream, with the cookie instead of a bearer header (EventSource sends no headers)
    return await generation_routes.stream_job(job_id=job_id, request=request, key=key)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, key: UiSubmit, _: Csrf, session: SessionDep) -> RedirectResponse:
    try:
        job_routes.cancel_job(job_id=job_id, key=key, session=session)
    except HTTPException as exc:
        if exc.status_code != 409:  # already ended: the job page says so
            raise
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/images")
def images_page(
    request: Request,
    job_id: str,
    key: UiRead,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    category: str | None = None,
    cursor: str | None = Query(None, max_length=200),
):
    job = generation_routes._generate_job(session, job_id, key)
    page = generation_routes.list_generated_images(
        job_id=job_id,
        key=key,
        session=session,
        store=store,
        category=category or None,
        limit=settings.ui_page_size,
        cursor=cursor,
    )
    categories = [name for name, _ in (job.params or {}).get("per_category", [])]
    return render(
        request,
        "images.html",
        key,
        job=JobOut.of(job),
        page=page,
        category=category or "",
        categories=categories,
        cursor=cursor,
    )


@router.get("/jobs/{job_id}/images/{index}")
def image_page(request: Request, job_id: str, index: int, key: UiRead, session: SessionDep, store: StoreDep):
    job = generation_routes._generate_job(session, job_id, key)
    row = _image(session, job_id, index)
    filename = f"{job_id}-{row.index:06d}.{row.key.rsplit('.', 1)[-1]}"
    return render(
        request,
        "image.html",
        key,
        job=JobOut.of(job),
        image=row,
        url=store.presign(row.key),
        download_url=store.presign(row.key, filename=filename),
    )


@router.get("/thumbs/{job_id}/{index}")
def thumbnail(
    job_id: str, index: int, key: UiRead, session: SessionDep, store: StoreDep, settings: SettingsDep
):
    generation_routes._generate_job(session, job_id, key)
    source_key = _image(session, job_id, index).key
    session.rollback()  # end the read transaction: no SQL transaction spans S3 or Pillow work
    thumb = ensure_thumbnail(
        store, job_id=job_id, index=index, source_key=source_key, size=settings.thumb_size
    )
    # The redirect itself is cacheable, so a page seen again costs the browser no request at all.
    expires = min(settings.presign_expires_seconds // 2, 3600)
    return RedirectResponse(
        store.presign(thumb, expires=settings.presign_expires_seconds),
        status_code=302,
        headers={"Cache-Control": f"private, max-age={expires}"},
    )


@router.get("/jobs/{job_id}/manifest")
def manifest(job_id: str, key: UiRead, session: SessionDep, store: StoreDep) -> RedirectResponse:
    return generation_routes.job_manifest(job_id=job_id, key=key, session=session, store=store)


@router.get("/jobs/{job_id}/archive")
def archive(job_id: str, key: UiRead, session: SessionDep, store: StoreDep) -> RedirectResponse:
    return generation_routes.job_archive(job_id=job_id, key=key, session=session, store=store)


def _image(session, job_id: str, index: int) -> GeneratedImage:  # noqa: ANN001
    row = session.scalars(
        select(GeneratedImage).where(GeneratedImage.job_id == job_id, GeneratedImage.index == index)
    ).one_or_none()
    if row is None:
        raise HTTPException(404, detail=f"job {job_id} has no image {index}")
    return row
