"""The Celery client: sends tasks by name, only after the transaction that wrote their rows commits.

The API never imports the workers (nor torch): it names tasks. A send that fails after the commit is
logged, not raised: the row is already stored and the reconciler re-sends queued work whose message
never arrived.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session

from core.config import get_settings
from core.models import Job, utcnow

log = logging.getLogger(__name__)

# task name and queue for the first task of each job kind
INGEST = ("atelier.ingest", "io")
RECONCILE = ("atelier.reconcile", "io")
TRAIN_SEGMENT = ("atelier.train_segment", "train")
GENERATE_PLAN = ("atelier.generate_plan", "io")
TREND_REPORT = ("atelier.trend_report", "io")
JOB_ENTRY_TASKS: dict[str, tuple[str, str]] = {
    "ingest": INGEST,
    "train": TRAIN_SEGMENT,
    "generate": GENERATE_PLAN,
    "trend": TREND_REPORT,
}

_PENDING = "atelier_pending_tasks"


@lru_cache
def celery_client() -> Celery:
    settings = get_settings()
    app = Celery("atelier-client", broker=settings.broker_url)
    app.conf.broker_transport_options = {"visibility_timeout": settings.broker_visibility_timeout}
    app.conf.broker_connection_retry_on_startup = True
    # Fail fast when the broker is down: the row is committed and the reconciler re-sends later,
    # so an API request must not hang for minutes in kombu's default publish retries.
    app.conf.broker_connection_timeout = 3
    app.conf.task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
    return app


def send_task(name: str, *, kwargs: dict[str, Any], queue: str) -> None:
    celery_client().send_task(name, kwargs=kwargs, queue=queue, routing_key=queue)


def send_after_commit(session: Session, name: str, *, kwargs: dict[str, Any], queue: str) -> None:
    session.info.setdefault(_PENDING, []).append((name, kwargs, queue))


def dispatch_job(session: Session, job: Job) -> None:
    """Mark the job as sent and send its entry task once the row is committed."""
    name, queue = JOB_ENTRY_TASKS[job.kind]
    job.dispatched_at = utcnow()
    send_after_commit(session, name, kwargs={"job_id": job.id}, queue=queue)


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    for name, kwargs, queue in pending:
        try:
            send_task(name, kwargs=kwargs, queue=queue)
        except Exception:  # the reconciler re-sends it; the committed row is what matters
            log.exception("could not send %s to %s; the reconciler will re-send it", name, queue)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
