"""Catalogue ingestion: validate uploads, dedupe by content hash, store originals in S3, rows in SQL.

    upload(files, category) ─┬─ each photo ── read up to its cap ── validate ── duplicate? ── put S3 ── row
                             └─ a ZIP (a spooled file) ── archives.py: one bounded member at a time ── same

A rejected file gets a reason and stores nothing; an accepted one is in S3 before its row commits, so
a row never points at a missing object. New photos get an `ingest` job that prepares them for training,
committed in the same transaction as their rows: a request that fails leaves neither.
Uploads arrive as files on disk (the multipart parser spools them): nothing here holds a whole request
in memory, only one photo at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from atelier.catalogue import archives
from atelier.catalogue.periods import label, ordinal
from atelier.catalogue.photos import RejectedImage, validate_image
from atelier.core.config import Settings
from atelier.core.models import CatalogueImage, utcnow
from atelier.core.storage import ObjectStore

CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
IMAGE_SUFFIXES = archives.IMAGE_SUFFIXES


@dataclass
class Upload:
    filename: str
    data: bytes


@dataclass
class UploadFile:
    """One file of a request, still on disk: its bytes are read only up to the cap that applies."""

    filename: str
    file: BinaryIO


@dataclass
class IngestResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    new_ids: list[str] = field(default_factory=list)


def normalize_category(raw: str | None) -> str:
    value = (raw or "").strip().lower().replace(" ", "-")
    if not CATEGORY_RE.match(value):
        raise ValueError(f"category {raw!r} is not valid: use 1-64 lowercase letters, digits, '-' or '_'")
    return value


def original_key(sha256: str, extension: str) -> str:
    return f"catalogue/originals/{sha256[:2]}/{sha256}.{extension}"


def _is_zip(upload: UploadFile) -> bool:
    head = upload.file.read(4)
    upload.file.seek(0)
    return upload.filename.lower().endswith(".zip") or head == b"PK\x03\x04"


def _photos(upload: UploadFile, default_category: str | None, settings: Settings, result: IngestResult):  # noqa: ANN202
    """(Upload, category folder or default) pairs of one file of the request; rejections go to result."""
    if _is_zip(upload):
        for item in archives.expand(upload.file, upload.filename, settings=settings):
            if isinstance(item, archives.Rejected):
                result.rejected.append({"filename": item.name, "reason": item.reason})
            else:
                yield Upload(item.name, item.data), item.category
        return
    data = upload.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        reason = f"file too large: over {settings.max_upload_bytes} bytes (ATELIER_MAX_UPLOAD_BYTES)"
        result.rejected.append({"filename": upload.filename, "reason": reason})
        return
    yield Upload(upload.filename, data), default_category


def ingest_uploads(
    *,
    session: Session,
    store: ObjectStore,
    settings: Settings,
    uploads: list[UploadFile],
    category: str | None,
    captured_at: datetime | None = None,
) -> IngestResult:
    """Validate, dedupe and store each photo; `captured_at` dates every new photo of the request
    (default: now), a duplicate keeps its date.

    No SQL transaction is held across Pillow or S3 work: decoding and the upload of each photo happen
    between short read transactions (the dedupe reads), and the new rows are added to `session` at the
    end, uncommitted: the caller commits them together with their ingest job."""
    result = IngestResult()
    default_category = None
    if category:
        default_category = normalize_category(category)  # a bad form field fails the whole request
    session.commit()  # nothing of this request may stay open across the work below
    # the dedupe reads: DEFERRED on SQLite, so they take no write lock
    short = sessionmaker(
        bind=session.get_bind().execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
    )
    pending: list[CatalogueImage] = []
    seen: dict[str, str] = {}  # sha256 -> category of a photo already taken in this request

    for upload in uploads:
        for photo, folder in _photos(upload, default_category, settings, result):
            try:
                cat = normalize_category(folder) if folder else None
            except ValueError as exc:
                result.rejected.append({"filename": photo.filename, "reason": str(exc)})
                continue
            if cat is None:
                reason = "no category: send the form field `category` or a ZIP of category folders"
                result.rejected.append({"filename": photo.filename, "reason": reason})
                continue
            row = _prepare_one(
                short=short,
                store=store,
                settings=settings,
                upload=photo,
                category=cat,
                result=result,
                seen=seen,
                captured_at=captured_at,
            )
            if row is not None:
                pending.append(row)
    # every row in the caller's session, uncommitted: the caller adds the ingest job and commits both
    # at once, so a request that fails at any point leaves no photo without a job to prepare it
    _insert(session, pending, result)
    ids = {a["sha256"]: a["id"] for a in result.accepted if a["id"] is not None}
    for entry in result.accepted:  # a photo sent twice in one request: the id its first copy got
        if entry["id"] is None:
            entry["id"] = ids[entry["sha256"]]
    return result


def _prepare_one(
    *,
    short: sessionmaker,
    store: ObjectStore,
    settings: Settings,
    upload: Upload,
    category: str,
    result: IngestResult,
    seen: dict[str, str],
    captured_at: datetime | None,
) -> CatalogueImage | None:
    """Decode and clean one photo, and store it unless it is a duplicate; the row to insert, or None."""
    try:
        clean = validate_image(
            upload.data,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_aspect=settings.max_aspect_ratio,
        )
    except RejectedImage as exc:
        result.rejected.append({"filename": upload.filename, "reason": str(exc)})
        return None
    if clean.sha256 in seen:
        result.accepted.append(
            {"id": None, "sha256": clean.sha256, "category": seen[clean.sha256], "duplicate": True}
        )
        return None
    with short() as s:
        existing = s.execute(
            select(CatalogueImage.id, CatalogueImage.category).where(CatalogueImage.sha256 == clean.sha256)
        ).first()
        s.rollback()  # a read: end it before the S3 put
    if existing is not None:
        result.accepted.append(
            {"id": existing.id, "sha256": clean.sha256, "category": existing.category, "duplicate": True}
        )
        return None
    key = original_key(clean.sha256, clean.extension)
    store.put(key, clean.data, content_type=clean.content_type)
    seen[clean.sha256] = category
    return CatalogueImage(
        sha256=clean.sha256,
        category=category,
        filename=PurePosixPath(upload.filename).name[:255],
        key=key,
        format=clean.format,
        width=clean.width,
        height=clean.height,
        size_bytes=len(clean.data),
        captured_at=captured_at or utcnow(),
    )


def _insert(s: Session, rows: list[CatalogueImage], result: IngestResult) -> None:
    """The rows, into the caller's transaction (left open: the caller commits it with the ingest job);
    a row that a concurrent upload inserted first becomes a duplicate of that row. The write lock is
    taken only here, after every Pillow decode and S3 PUT of the request."""
    if not rows:
        return
    for row in rows:
        try:
            with s.begin_nested():
                s.add(row)
        except IntegrityError:  # a concurrent upload of the same photo won the insert
            existing = s.scalars(select(CatalogueImage).where(CatalogueImage.sha256 == row.sha256)).one()
            result.accepted.append(
                {
                    "id": existing.id,
                    "sha256": existing.sha256,
                    "category": existing.category,
                    "duplicate": True,
                }
            )
        else:
            result.new_ids.append(row.id)
            result.accepted.append(
                {"id": row.id, "sha256": row.sha256, "category": row.category, "duplicate": False}
            )


def stats(*, session: Session, period: str = "month") -> dict[str, Any]:
    per_category = dict(
        session.execute(select(CatalogueImage.category, func.count()).group_by(CatalogueImage.category)).all()
    )
    day = func.date(CatalogueImage.created_at)  # UTC days on both SQLite and PostgreSQL
    per_day = {
        str(d): n for d, n in session.execute(select(day, func.count()).group_by(day).order_by(day)).all()
    }
    # Grouped in Python: week and season boundaries are not portable SQL; two short columns per photo.
    per_period: dict[str, dict[str, int]] = {}
    rows = session.execute(select(CatalogueImage.captured_at, CatalogueImage.category)).all()
    for n, cat in sorted((ordinal(at, period), cat) for at, cat in rows):
        counts = per_period.setdefault(label(n, period), {})
        counts[cat] = counts.get(cat, 0) + 1
    return {
        "total": sum(per_category.values()),
        "per_category": dict(sorted(per_category.items())),
        "per_day": per_day,
        "period": period,
        "per_period": per_period,
    }


def parse_captured_at(value: str | None, *, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 date or datetime (UTC when no zone is given), not in the future."""
    try:
        parsed = parse_since(value)
    except ValueError as exc:
        raise ValueError(f"captured_at {value!r} is not an ISO 8601 date or datetime") from exc
    if parsed is not None and parsed > (now or utcnow()):
        raise ValueError(f"captured_at {value!r} is in the future")
    return parsed


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"since {value!r} is not an ISO 8601 date or datetime") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
