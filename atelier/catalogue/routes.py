from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import select

from atelier.api.deps import CatalogueKey, ReadKey, SessionDep, SettingsDep, StoreDep, invalid
from atelier.api.schemas import JobOut, errors
from atelier.api.submits import IdempotencyKey, checked_webhook_url, repeated, submit_errors
from atelier.catalogue import imports, ingest_jobs
from atelier.catalogue import service as catalogue
from atelier.catalogue.periods import PERIODS
from atelier.catalogue.schemas import CatalogueImageOut, CataloguePage, CatalogueStats, UploadResult
from atelier.core import idempotency, quotas
from atelier.core.models import CatalogueImage
from atelier.core.pagination import MAX_LIMIT, BadCursor, page

router = APIRouter(prefix="/v1/catalogue", tags=["catalogue"], responses=errors(401, 403, 413, 422))


@router.post(
    "/images",
    status_code=201,
    response_model=UploadResult,
    # a 422 is a bad field, or no file accepted: then `rejected` (an extra field) says why
    responses=errors(400, 409, 413, 422, 429),
)
def upload_images(
    key: CatalogueKey,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    files: Annotated[
        list[UploadFile], File(description="JPEG/PNG/WebP photos, or ZIPs of category folders", min_length=1)
    ],
    category: Annotated[str | None, Form()] = None,
    captured_at: Annotated[
        str | None, Form(description="ISO 8601 date or datetime the photos were taken; default: now")
    ] = None,
    webhook_url: Annotated[
        str | None, Form(description="POSTed a signed job event when the ingest job of the new photos ends")
    ] = None,
    idempotency_key: IdempotencyKey = None,
):
    try:
        captured = catalogue.parse_captured_at(captured_at)
    except ValueError as exc:
        raise invalid("body", "captured_at", msg=str(exc)) from exc
    webhook = checked_webhook_url(webhook_url, settings, "body", "webhook_url")
    # The body arrived within ATELIER_MAX_REQUEST_BYTES (api/limits.py) and each file is spooled on disk
    # by the multipart parser: from here on one photo at a time is in memory.
    if len(files) > settings.max_upload_files:
        raise HTTPException(
            413,
            detail=f"{len(files)} files in one request, the limit is {settings.max_upload_files} "
            "(ATELIER_MAX_UPLOAD_FILES)",
        )
    uploads = [catalogue.UploadFile(f.filename or "upload", f.file) for f in files]
    scoped = idempotency.scoped(key.id, idempotency_key)
    body_hash = None
    if scoped:
        form = ingest_jobs.form_of(category=category, captured_at=captured, webhook_url=webhook)
        body_hash = ingest_jobs.request_hash([(u.filename, u.file) for u in uploads], form)
    with submit_errors():
        earlier = idempotency.existing(session, scoped, body_hash)
        if earlier is None:  # a repeat is answered with its job, never a 429
            quotas.check_submit(session=session, key=key, settings=settings, kind="ingest")
    try:
        result = catalogue.ingest_uploads(
            session=session,
            store=store,
            settings=settings,
            uploads=uploads,
            category=category,
            captured_at=captured,
        )
    except ValueError as exc:
        raise invalid("body", "category", msg=str(exc)) from exc
    job = earlier  # a repeat: its photos are duplicates now, and its job is the first request's
    if result.new_ids:
        job = ingest_jobs.photos_job(
            session=session,
            new_ids=result.new_ids,
            api_key_id=key.id,
            webhook_url=webhook,
            # new photos under a key already answered (an earlier attempt lost some): a job of their own
            scoped_key=scoped if earlier is None else None,
            body_hash=body_hash if earlier is None else None,
        )
    body = UploadResult(
        accepted=result.accepted, rejected=result.rejected, job=JobOut.of(job, key) if job else None
    )
    if not result.accepted:
        session.commit()
        return JSONResponse(
            {"detail": "no file was accepted", **body.model_dump(mode="json")}, status_code=422
        )
    return body


@router.post(
    "/imports",
    status_code=202,
    response_model=JobOut,
    responses=repeated(JobOut) | errors(409, 413, 422, 429),
)
def import_dataset(
    key: CatalogueKey,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[UploadFile, File(description="a ZIP of the data set in its layout")],
    format: Annotated[Literal["deepfashion"], Form(description="the layout of the ZIP")] = "deepfashion",  # noqa: A002
    mapping: Annotated[
        str | None,
        Form(description="JSON object: data set category -> catalogue category (null skips)"),
    ] = None,
    partitions: Annotated[
        str | None, Form(description="comma-separated: train, val, test; default: every photo")
    ] = None,
    crop: Annotated[bool, Form(description="crop each photo to its bounding box, where it has one")] = True,
    captured_at: Annotated[
        str | None, Form(description="ISO 8601 date or datetime the photos were taken; default: now")
    ] = None,
    webhook_url: Annotated[
        str | None, Form(description="POSTed a signed job event when the import ends")
    ] = None,
    idempotency_key: IdempotencyKey = None,
):
    """An `ingest` job that imports a data set ZIP (DeepFashion's Category and Attribute Prediction
    layout): photos go through the uploads' validation, dedupe and metadata stripping; malformed
    annotation lines are listed in the job's result and do not stop it."""
    try:
        captured = catalogue.parse_captured_at(captured_at)
    except ValueError as exc:
        raise invalid("body", "captured_at", msg=str(exc)) from exc
    webhook = checked_webhook_url(webhook_url, settings, "body", "webhook_url")
    scoped = idempotency.scoped(key.id, idempotency_key)
    body_hash = None
    if scoped:
        form = ingest_jobs.form_of(
            format=format,
            mapping=mapping,
            partitions=partitions,
            crop=crop,
            captured_at=captured,
            webhook_url=webhook,
        )
        body_hash = ingest_jobs.request_hash([(file.filename or "", file.file)], form)
    try:
        with submit_errors():
            job, created = imports.submit(
                session=session,
                store=store,
                settings=settings,
                fileobj=file.file,
                fmt=format,
                mapping=mapping,
                partitions=partitions,
                crop=crop,
                captured_at=captured,
                api_key_id=key.id,
                webhook_url=webhook,
                scoped_key=scoped,
                body_hash=body_hash,
                quota_key=key,
            )
    except imports.InvalidImport as exc:
        raise invalid("body", exc.field, msg=str(exc)) from exc
    if not created:
        response.status_code = 200
    return JobOut.of(job, key)


@router.get("/images", response_model=CataloguePage)
def list_images(
    _: ReadKey,
    session: SessionDep,
    store: StoreDep,
    category: str | None = None,
    since: str | None = Query(None, description="ISO 8601 date or datetime; images created at or after"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
):
    stmt = select(CatalogueImage)
    if category:
        stmt = stmt.where(CatalogueImage.category == category.strip().lower())
    try:
        since_at = catalogue.parse_since(since)
    except ValueError as exc:
        raise invalid("query", "since", msg=str(exc)) from exc
    if since_at:
        stmt = stmt.where(CatalogueImage.created_at >= since_at)
    try:
        rows, next_cursor = page(
            stmt,
            session=session,
            time_col=CatalogueImage.created_at,
            id_col=CatalogueImage.id,
            limit=limit,
            cursor=cursor,
        )
    except BadCursor as exc:
        raise invalid("query", "cursor", msg=str(exc)) from exc
    return CataloguePage(
        items=[CatalogueImageOut.of(r, store.presign(r.key)) for r in rows], next_cursor=next_cursor
    )


@router.get("/stats", response_model=CatalogueStats)
def catalogue_stats(
    _: ReadKey,
    session: SessionDep,
    period: str = Query("month", description="groups `per_period` by captured_at: week, month or season"),
):
    if period not in PERIODS:
        raise invalid("query", "period", msg=f"unknown period {period!r}; one of {', '.join(PERIODS)}")
    return CatalogueStats(**catalogue.stats(session=session, period=period))
