"""`atelier.deliver_webhook`, on the io queue: the webhook unit of an ended job (the outbox row that
core.units.end_job adds in the job's own terminal transaction).

One attempt per delivery of the unit; a refused or failed POST that is worth retrying (an error, a
time-out, 408, 429, 5xx) gives the unit back with exponential backoff, up to WEBHOOK_MAX_ATTEMPTS;
every attempt is an event. A webhook never changes its job's outcome.
"""

from __future__ import annotations

import logging

from core import units, webhooks
from core.config import get_settings
from core.db import session_scope
from core.models import Job
from core.queue import DELIVER_WEBHOOK
from workers.celery_app import task
from workers.leases import Lease, lease_unit

log = logging.getLogger(__name__)

WEBHOOK_MAX_ATTEMPTS = 9


@task(DELIVER_WEBHOOK)
def deliver_webhook(unit_id: int) -> None:
    with lease_unit(unit_id) as lease:
        if lease is not None:
            run_webhook(lease)


def backoff(attempt: int) -> float:
    return min(2.0 ** (attempt - 1), 600.0)


def run_webhook(lease: Lease) -> str:
    """One delivery attempt; returns what became of it: delivered, retrying, failed or no webhook."""
    settings = get_settings()
    attempt = lease.unit.attempts + 1
    with session_scope(readonly=True) as session:
        job = session.get(Job, lease.job_id)
        url = (job.params or {}).get("webhook_url") if job is not None else None
        body = webhooks.body_of(job) if url else b""
    if not url:
        lease.succeed()
        return "no webhook"
    try:
        code = webhooks.deliver(url, body, secret=settings.webhook_secret, job_id=lease.job_id)
    except webhooks.DeliveryFailed as exc:
        retry = exc.retryable and attempt < WEBHOOK_MAX_ATTEMPTS
        lease.event(
            "webhook_failed",
            f"webhook attempt {attempt} failed: {exc}"
            + (f"; retrying in {backoff(attempt):.0f} s" if retry else "; giving up"),
            {"attempt": attempt, "retry": retry},
        )
        if retry:
            lease.give_back(f"webhook: {exc}", delay=backoff(attempt))
            return "retrying"
        lease.finish(units.FAILED, error=str(exc))
        return "failed"
    lease.event(
        "webhook_delivered",
        f"webhook delivered (HTTP {code}) on attempt {attempt}",
        {"attempt": attempt, "status": code},
    )
    lease.succeed()
    return "delivered"
