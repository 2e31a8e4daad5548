"""The ingest jobs that catalogue requests create, with what every submit has: a `webhook_url` notified
when the job ends, and an Idempotency-Key that makes a repeated request answer with the same job.

    POST /v1/catalogue/images   photos are deduplicated by content already; the key is remembered with
                                the ingest job of the new photos, so a repeat (all duplicates by then)
                                answers with that job, and the key with other files is a 409
    POST /v1/catalogue/imports  the ZIP and the form fields are the request: a repeat answers with the
                                first import's job, without storing the ZIP again

A request's files are hashed only when it carries an Idempotency-Key (one more read of the spooled file).
"""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from atelier.core import idempotency, jobs, units
from atelier.core.models import Job
from atelier.core.params import IngestParams


def request_hash(files: list[tuple[str, BinaryIO]], form: dict[str, Any]) -> str:
    """sha256 over each file's name and bytes, then the form fields; every file is left at its start."""
    h = hashlib.sha256()
    for name, fileobj in files:
        h.update(f"{len(name)}:{name}:".encode())
        fileobj.seek(0)
        for block in iter(lambda f=fileobj: f.read(1 << 20), b""):
            h.update(block)
        fileobj.seek(0)
        h.update(b"\0")
    h.update(idempotency.request_hash(form).encode())
    return h.hexdigest()


def photos_job(
    *,
    session: Session,
    new_ids: list[str],
    api_key_id: str | None,
    webhook_url: str | None,
    scoped_key: str | None,
    body_hash: str | None,
) -> Job:
    """The ingest job that prepares the new photos of an upload (sent after the commit)."""
    job, created = idempotency.create_once(
        session,
        scoped_key,
        body_hash,
        lambda: jobs.create_job(
            session=session,
            kind="ingest",
            params=IngestParams(image_ids=new_ids, webhook_url=webhook_url).model_dump(mode="json"),
            total=len(new_ids),
            api_key_id=api_key_id,
            idempotency_key=scoped_key,
            request_hash=body_hash,
        ),
    )
    if created:
        units.start_work(session, job)
    return job


def form_of(**fields: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in fields.items()}
