"""Per-key quotas, counted from SQL so that every API process agrees:

    ATELIER_QUOTA_ACTIVE_JOBS       train and generate jobs of the key still queued or running
    ATELIER_QUOTA_IMAGES_PER_HOUR   images asked for by the key's generation jobs of the last hour

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


def check_submit(*, session: Session, key: ApiKey, settings: Settings, images: int = 0) -> None:
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.api_key_id == key.id,
            Job.status.in_((jobs.QUEUED, jobs.RUNNING)),
            Job.kind.in_(("train", "generate")),
        )
    )
    if active >= settings.quota_active_jobs:
        raise QuotaExceeded(
            f"this key has {active} jobs queued or running, the limit is {settings.quota_active_jobs} "
            "(ATELIER_QUOTA_ACTIVE_JOBS)",
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
