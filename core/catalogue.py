"""Catalogue ingestion: validate uploads, dedupe by content hash, store originals in S3, rows in SQL.

    upload(files, category) ─┬─ each photo ── validate ── duplicate? ── put S3 ── insert row
                             └─ a ZIP ── check every member name first (no traversal) ── same per photo

A rejected file gets a reason and stores nothing; an accepted one is in S3 before its row commits, so
a row never points at a missing object. New photos get an `ingest` job that prepares them for training.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Settings
from core.imaging import RejectedImage, validate_image
from core.models import CatalogueImage, utcnow
from core.periods import label, ordinal
from core.storage import ObjectStore

CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass
class Upload:
    filename: str
    data: bytes


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


def is_zip(upload: Upload) -> bool:
    return upload.filename.lower().endswith(".zip") or upload.data[:4] == b"PK\x03\x04"


def expand_zip(upload: Upload, *, settings: Settings) -> tuple[list[tuple[Upload, str]], list[dict]]:
    """The photos of a ZIP with the category of their folder, or the reason the whole ZIP is refused."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
    except zipfile.BadZipFile:
        return [], [{"filename": upload.filename, "reason": "corrupt ZIP archive"}]
    members = [m for m in archive.infolist() if not m.is_dir()]
    for member in members:  # refuse the whole archive before reading anything from it
        name = member.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name):
            return [], [{"filename": upload.filename, "reason": f"unsafe path in ZIP: {member.filename!r}"}]
    if len(members) > settings.max_zip_members:
        reason = f"ZIP has {len(members)} files, the limit is {settings.max_zip_members}"
        return [], [{"filename": upload.filename, "reason": reason}]
    photos: list[tuple[Upload, str]] = []
    rejected: list[dict] = []
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.name.startswith(".") or "__MACOSX" in path.parts:
            continue
        shown = f"{upload.filename}:{member.filename}"
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            rejected.append({"filename": shown, "reason": "not an image: expected .jpg, .png or .webp"})
            continue
        if len(path.parts) < 2:
            rejected.append({"filename": shown, "reason": "no category: put photos in category folders"})
            continue
        if member.file_size > settings.max_upload_bytes:
            reason = f"file too large: {member.file_size} bytes, the limit is {settings.max_upload_bytes}"
            rejected.append({"filename": shown, "reason": reason})
            continue
        photos.append((Upload(shown, archive.read(member)), path.parts[-2]))
    return photos, rejected


def ingest_uploads(
    *,
    session: Session,
    store: ObjectStore,
    settings: Settings,
    uploads: list[Upload],
    category: str | None,
    captured_at: datetime | None = None,
) -> IngestResult:
    """`captured_at` dates every new photo of the request (default: now); a duplicate keeps its date."""
    result = IngestResult()
    default_category = None
    if category:
        default_category = normalize_category(category)  # a bad form field fails the whole request

    for upload in uploads:
        if is_zip(upload):
            photos, rejected = expand_zip(upload, settings=settings)
            result.rejected.extend(rejected)
        else:
            photos = [(upload, default_category)]
        for photo, folder in photos:
            try:
                cat = normalize_category(folder) if folder else None
            except ValueError as exc:
                result.rejected.append({"filename": photo.filename, "reason": str(exc)})
                continue
            if cat is None:
                reason = "no category: send the form field `category` or a ZIP of category folders"
                result.rejected.append({"filename": photo.filename, "reason": reason})
                continue
            _ingest_one(
                session=session,
                store=store,
                settings=settings,
                upload=photo,
                category=cat,
                result=result,
                captured_at=captured_at,
            )
    return result


def _ingest_one(
    *,
    session: Session,
    store: ObjectStore,
    settings: Settings,
    upload: Upload,
    category: str,
    result: IngestResult,
    captured_at: datetime | None = None,
) -> None:
    try:
        clean = validate_image(
            upload.data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
        )
    except RejectedImage as exc:
        result.rejected.append({"filename": upload.filename, "reason": str(exc)})
        return
    existing = session.scalars(select(CatalogueImage).where(CatalogueImage.sha256 == clean.sha256)).first()
    if existing is None:
        key = original_key(clean.sha256, clean.extension)
        store.put(key, clean.data, content_type=clean.content_type)
        row = CatalogueImage(
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
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # a concurrent upload of the same photo won the insert
            existing = session.scalars(
                select(CatalogueImage).where(CatalogueImage.sha256 == clean.sha256)
            ).one()
        else:
            result.new_ids.append(row.id)
            result.accepted.append(
                {"id": row.id, "sha256": row.sha256, "category": category, "duplicate": False}
            )
            return
    result.accepted.append(
        {"id": existing.id, "sha256": existing.sha256, "category": existing.category, "duplicate": True}
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
