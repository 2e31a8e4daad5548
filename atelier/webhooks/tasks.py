"""`atelier.deliver_webhook`, on the io queue: the webhook unit of an ended job of any kind (the outbox
row that atelier.core.units.end_job adds in the job's own terminal transaction). The body is the event
envelope of atelier.webhooks.events.

One attempt per delivery of the unit: the destination policy is checked on the address really dialled
(atelier.webhooks.outbound) and the body signed the Standard Webhooks way with the submitting key's secret
(atelier.webhooks.signing). A failure worth retrying (an error, a time-out, 408, 429, 5xx) gives the unit
back with exponential backoff, up to WEBHOOK_MAX_ATTEMPTS; every attempt is an event that names the
host and a short category, never the path (it may carry tokens) or the raw network error. A webhook
never changes its job's outcome.
"""

from __future__ import annotations

import logging
import time

from atelier.core import units
from atelier.core.config import get_settings
from atelier.core.models import Job
from atelier.core.queue import DELIVER_WEBHOOK
from atelier.webhooks import events, outbound
from atelier.webhooks import signing as webhook_signing
from atelier.workers.celery_app import task
from atelier.workers.leases import Lease, lease_unit

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

    def read(session):  # noqa: ANN001, ANN202
        job = session.get(Job, lease.job_id)
        url = (job.params or {}).get("webhook_url") if job is not None else None
        if not url:
            return None, b"", {}
        body = events.body_of(job)
        return url, body, webhook_signing.headers_for_job(session, job, body, settings, now=time.time())

    url, body, headers = lease.sql(read, what="reading the job")
    if not url:
        lease.succeed()
        return "no webhook"
    outcome = outbound.post_webhook(
        url, body, headers, settings=settings, timeout=settings.webhook_timeout_seconds
    )
    shown = outbound.redact_url(url)
    if not outcome.delivered:
        retry = outcome.retryable and attempt < WEBHOOK_MAX_ATTEMPTS
        lease.event(
            "webhook_failed",
            f"webhook attempt {attempt} to {shown} failed: {outcome.category}"
            + (f"; retrying in {backoff(attempt):.0f} s" if retry else "; giving up"),
            {"attempt": attempt, "url": shown, "retry": retry, "category": outcome.category},
        )
        if retry:
            lease.give_back(f"webhook: {outcome.category}", delay=backoff(attempt))
            return "retrying"
        lease.finish(units.FAILED, error=outcome.category)
        return "failed"
    lease.event(
        "webhook_delivered",
        f"webhook delivered to {shown} (HTTP {outcome.status_code}) on attempt {attempt}",
        {"attempt": attempt, "url": shown, "status": outcome.status_code},
    )
    lease.succeed()
    return "delivered"
