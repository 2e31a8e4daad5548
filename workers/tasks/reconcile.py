"""`atelier.reconcile`, on beat: the database is the truth, Redis only carries messages.

- a running job whose heartbeat is stale lost its worker: it goes back to queued (or fails once it
  has used up its deliveries) and its task is sent again;
- a queued job whose message was never sent or is long overdue gets its task sent again (a duplicate
  is harmless: the claim lets one delivery in);
- a running job whose cancel was asked but whose worker is gone ends as cancelled.
"""

from __future__ import annotations

import logging

from core import jobs
from core.config import get_settings
from core.db import session_scope
from core.queue import dispatch_job
from workers.celery_app import app
from workers.tasks.generate import reconcile_generation

log = logging.getLogger(__name__)


@app.task(name="atelier.reconcile", acks_late=True)
def reconcile() -> dict[str, int]:
    return run_reconcile()


def run_reconcile() -> dict[str, int]:
    settings = get_settings()
    counts = {"requeued": 0, "failed": 0, "resent": 0, "cancelled": 0}
    counts.update(reconcile_generation())  # first: generate jobs are leased by chunk, not by job row
    with session_scope() as session:
        for job in jobs.stale_running_jobs(
            session=session,
            stale_after=settings.stale_after_seconds,
            waiting_after=settings.resend_after_seconds,
        ):
            if job.cancel_requested:
                jobs.transition(session=session, job=job, to=jobs.CANCELLED, message="cancelled; worker gone")
                counts["cancelled"] += 1
            elif job.deliveries >= settings.max_deliveries:
                jobs.transition(
                    session=session,
                    job=job,
                    to=jobs.FAILED,
                    error=f"worker lost {job.deliveries} times; giving up",
                )
                counts["failed"] += 1
            else:
                jobs.transition(
                    session=session,
                    job=job,
                    to=jobs.QUEUED,
                    message=f"worker {job.worker} stopped heartbeating; re-queued",
                )
                dispatch_job(session, job)
                counts["requeued"] += 1
    with session_scope() as session:
        for job in jobs.undispatched_jobs(session=session, resend_after=settings.resend_after_seconds):
            dispatch_job(session, job)
            counts["resent"] += 1
    if any(counts.values()):
        log.info("reconcile: %s", counts)
    return counts
