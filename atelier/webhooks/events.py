"""The one webhook body of every job kind: an event envelope around the job object.

    {"type": "job.succeeded", "timestamp": "2026-11-27T02:14:09.5Z", "data": {...the job...}}

    type       job.succeeded | job.partially_succeeded | job.failed | job.cancelled
    timestamp  when the job ended (the same on every retry of the delivery)
    data       the job as GET /v1/jobs/{id} shows it to the key that submitted it (webhooks.payload)

The bytes are serialised once per attempt and signed as they are (webhooks.signing); the envelope is
what the client's atelier.client.models.WebhookEvent reads.
"""

from __future__ import annotations

import json
from typing import Any

from atelier.core import jobs
from atelier.core.models import Job
from atelier.webhooks.payload import iso, job_payload

TYPES = {
    jobs.SUCCEEDED: "job.succeeded",
    jobs.PARTIALLY_SUCCEEDED: "job.partially_succeeded",
    jobs.FAILED: "job.failed",
    jobs.CANCELLED: "job.cancelled",
}


def event_type(job: Job) -> str:
    # a webhook unit exists only once its job ended; anything else would be a bug worth seeing
    return TYPES.get(job.status, f"job.{job.status}")


def envelope(job: Job) -> dict[str, Any]:
    ended = job.finished_at or job.updated_at
    return {"type": event_type(job), "timestamp": iso(ended), "data": job_payload(job)}


def body_of(job: Job) -> bytes:
    return json.dumps(envelope(job), separators=(",", ":"), sort_keys=True).encode()
