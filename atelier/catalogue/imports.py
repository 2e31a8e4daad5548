"""Data set imports over HTTP: a ZIP in a known layout becomes an `ingest` job that reads it.

POST /v1/catalogue/imports ──> submit(): the ZIP's directory checked (the upload archive caps, the
    layout's annotation files present), the mapping and partitions checked ──> the ZIP in S3 under
    imports/ ──> job(kind="ingest", params=IngestParams(source=ImportSource)) ──> atelier.ingest,
    which reads it with catalogue.deepfashion and ingests the photos like uploads (catalogue/import_run.py)

Only the central directory is read here; the members are inflated by the worker, under the same caps.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import BinaryIO

from sqlalchemy.orm import Session

from atelier.catalogue import archives, deepfashion
from atelier.core import idempotency, jobs, quotas, units
from atelier.core.config import Settings
from atelier.core.models import Job
from atelier.core.params import ImportSource, IngestParams
from atelier.core.storage import ObjectStore

FORMATS = ("deepfashion",)


class InvalidImport(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def archive_key() -> str:
    return f"imports/{uuid.uuid4().hex}/archive.zip"


def check_source(
    *,
    fileobj: BinaryIO,
    settings: Settings,
    fmt: str,
    mapping: str | None,
    partitions: str | None,
    crop: bool,
    captured_at: datetime | None,
) -> ImportSource:
    """The import's params without its S3 key, or InvalidImport naming the form field at fault."""
    if fmt not in FORMATS:
        raise InvalidImport("format", f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    try:
        names = archives.member_names(fileobj, settings=settings)
        root = deepfashion.find_root(names)
    except ValueError as exc:
        raise InvalidImport("file", str(exc)) from exc
    finally:
        fileobj.seek(0)
    table = None
    if mapping is not None:
        try:
            table = deepfashion.parse_mapping(json.loads(mapping), source="mapping")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise InvalidImport("mapping", str(exc)) from exc
    chosen = None
    if partitions:
        chosen = sorted({p.strip() for p in partitions.split(",") if p.strip()})
        unknown = [p for p in chosen if p not in deepfashion.PARTITIONS]
        if unknown:
            raise InvalidImport(
                "partitions", f"unknown partition {unknown[0]!r}; one of {', '.join(deepfashion.PARTITIONS)}"
            )
        if chosen and root + deepfashion.PARTITION.as_posix() not in names:
            reason = f"the ZIP has no {deepfashion.PARTITION}: partitions cannot be chosen"
            raise InvalidImport("partitions", reason)
    return ImportSource(
        archive_key="",
        root=root,
        mapping=table,
        partitions=chosen or None,
        crop=crop,
        captured_at=captured_at,
    )


def submit(
    *,
    session: Session,
    store: ObjectStore,
    settings: Settings,
    fileobj: BinaryIO,
    fmt: str,
    mapping: str | None,
    partitions: str | None,
    crop: bool,
    captured_at: datetime | None,
    api_key_id: str | None,
    webhook_url: str | None = None,
    scoped_key: str | None = None,
    body_hash: str | None = None,
    quota_key=None,  # noqa: ANN001 - the submitting key: its ingest quota is checked
) -> tuple[Job, bool]:
    """Check the import, store its ZIP, and queue the ingest job that reads it (sent after commit).
    Returns (job, created): a repeated Idempotency-Key (`scoped_key`, `body_hash`) answers with the
    first import's job and stores nothing."""
    earlier = idempotency.existing(session, scoped_key, body_hash)
    if earlier is not None:
        return earlier, False
    if quota_key is not None:  # before the ZIP is read or stored
        quotas.check_submit(session=session, key=quota_key, settings=settings, kind="ingest")
    source = check_source(
        fileobj=fileobj,
        settings=settings,
        fmt=fmt,
        mapping=mapping,
        partitions=partitions,
        crop=crop,
        captured_at=captured_at,
    )
    source.archive_key = archive_key()
    store.put_file(source.archive_key, fileobj, content_type="application/zip")  # before the row
    job, created = idempotency.create_once(
        session,
        scoped_key,
        body_hash,
        lambda: jobs.create_job(
            session=session,
            kind="ingest",
            params=IngestParams(source=source, webhook_url=webhook_url).model_dump(mode="json"),
            api_key_id=api_key_id,
            idempotency_key=scoped_key,
            request_hash=body_hash,
        ),
    )
    if created:
        units.start_work(session, job)
    return job, created
