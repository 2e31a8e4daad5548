"""`Idempotency-Key` on every submit, whatever the job kind:

    same API key + same Idempotency-Key + same body      -> the job the first request made (200)
    same API key + same Idempotency-Key + another body   -> IdempotencyConflict (409 naming the header)

The key is scoped to the API key that sent it (two teams may both use "nightly-1") and stored on the
job row (`jobs.idempotency_key`, unique), with a hash of the request as it was sent, before defaults
are drawn. Two concurrent requests with one key: the unique index lets one insert win, and the other
answers with the winner's job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atelier.core.models import Job

HEADER = "Idempotency-Key"


class IdempotencyConflict(Exception):
    pass


def scoped(api_key_id: str | None, idempotency_key: str | None) -> str | None:
    return f"{api_key_id}:{idempotency_key}"[:255] if idempotency_key else None


def request_hash(body: Any) -> str:
    """The hash of a request body (any JSON value): what a repeat must match."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def existing(session: Session, key: str | None, body_hash: str | None) -> Job | None:
    """The job of an earlier request with this scoped key, or None; IdempotencyConflict when that
    request had another body."""
    if key is None:
        return None
    job = session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()
    if job is not None and body_hash is not None and job.request_hash != body_hash:
        raise IdempotencyConflict(
            f"{HEADER} was already used for job {job.id} with a different request body; "
            f"send a new {HEADER} for a new job"
        )
    return job


def create_once(
    session: Session, key: str | None, body_hash: str | None, create: Callable[[], Job]
) -> tuple[Job, bool]:
    """(job, created): the earlier job of `key`, or the one `create()` makes in a savepoint. `create`
    must put `key` and `body_hash` on the job it makes (jobs.create_job's idempotency_key and
    request_hash)."""
    found = existing(session, key, body_hash)
    if found is not None:
        return found, False
    try:
        with session.begin_nested():
            job = create()
    except IntegrityError:  # a concurrent request with the same key won
        found = existing(session, key, body_hash)
        if found is None:
            raise
        return found, False
    return job, True
