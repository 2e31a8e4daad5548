"""Per-key quotas, counted from SQL so that every API process agrees:

    ATELIER_QUOTA_ACTIVE_JOBS          train and generate jobs of the key still queued or running
    ATELIER_QUOTA_IMAGES_PER_HOUR      images asked for by the key's generation jobs of the last hour
    ATELIER_QUOTA_ACTIVE_TREND_JOBS    trend reports of the key still queued or running
    ATELIER_QUOTA_ACTIVE_INGEST_JOBS   ingest jobs (uploads' and imports') of the key queued or running

Trend and ingest jobs run on the `io` queue that finalize and webhook deliveries share, so they have
quotas of their own: a key cannot fill that queue with them.

Count-then-insert is one critical section per key: `check_submit` locks the key's row
(SELECT ... FOR UPDATE on PostgreSQL; on SQLite every writing transaction already holds the database's
write lock from its BEGIN IMMEDIATE, atelier/core/db.py) until the caller's transaction commits the new
job, so N parallel submits at quota Q accept exactly Q. Callers look up an Idempotency-Key first
(atelier/core/idempotency.py): a retry of an accepted submit gets its job, never a 429.

A refusal carries the seconds after which the same request would pass (Retry-After). Event streams are
counted per API process in atelier/generation/routes.py (a stream is a connection to one process).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from atelier.core import jobs
from atelier.core.config import Settings
from atelier.core.models import ApiKey, Job
from atelier.core.models.base import utcnow

HOUR = timedelta(hours=1)
ACTIVE_RETRY_SECONDS = 30.0


class QuotaExceeded(Exception):
    def __init__(self, reason: str, retry_after: float):
        super().__init__(reason)
        self.retry_after = retry_after


# job kinds -> (what they are called, the Settings field of their active-jobs quota)
ACTIVE_QUOTAS: dict[tuple[str, ...], tuple[str, str]] = {
    ("train", "generate"): ("train and generate jobs", "quota_active_jobs"),
    ("trend",): ("trend reports", "quota_active_trend_jobs"),
    ("ingest",): ("ingest jobs", "quota_active_ingest_jobs"),
}


def lock_key(session: Session, key_id: str) -> None:
    """Hold the key's row until the transaction ends: concurrent submits of one key count in turn."""
    session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())


def check_submit(
    *, session: Session, key: ApiKey, settings: Settings, images: int = 0, kind: str = "generate"
) -> None:
    """QuotaExceeded when a new `kind` job of `key` would pass a quota; else the key's row stays
    locked until the caller commits (or rolls back)."""
    lock_key(session, key.id)
    kinds = next(k for k in ACTIVE_QUOTAS if kind in k)
    what, field = ACTIVE_QUOTAS[kinds]
    limit = getattr(settings, field)
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.api_key_id == key.id,
            Job.status.in_((jobs.QUEUED, jobs.RUNNING)),
            Job.kind.in_(kinds),
        )
    )
    if active >= limit:
        raise QuotaExceeded(
            f"this key has {active} {what} queued or running, the limit is {limit} (ATELIER_{field.upper()})",
            ACTIVE_RETRY_SECONDS,
        )
    if images <= 0:
        return
    since = utcnow() - HOUR
    recent = session.execute(
        select(Job.created_at, Job.progress_total)
        .where(Job.api_key_id == key.id, Job.kind == "generate", Job.created_at >= since)
        .order_by(Job.created_at)
    ).all()
    used = sum(total for _, total in recent)
    limit = settings.quota_images_per_hour
    if used + images <= limit:
        return
    # the request passes once enough of the oldest jobs have left the one-hour window
    freed, retry = 0, HOUR.total_seconds()
    for created_at, total in recent:
        freed += total
        if used - freed + images <= limit:
            retry = (created_at + HOUR - utcnow()).total_seconds()
            break
    raise QuotaExceeded(
        f"this key queued {used} images in the last hour; {images} more would pass the limit of {limit} "
        "(ATELIER_QUOTA_IMAGES_PER_HOUR)",
        max(retry, 1.0),
    )
