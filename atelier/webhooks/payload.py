"""The job object of a webhook, in the shape of atelier.api.schemas.JobOut (a feature does not import the
API's schemas; a unit test keeps the two equal). It is the `data` of the event envelope
(atelier.webhooks.events), serialised once so that its bytes are what is signed.

Signing (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature with the submitting
key's secret) is webhooks.signing; the destination policy and the POST are webhooks.outbound; the
delivery itself is the webhook unit of the outbox (webhooks/tasks.py).
"""

from __future__ import annotations

from typing import Any

from atelier.core.models import Job


def job_payload(job: Job) -> dict[str, Any]:
    info = {k: v for k, v in (job.progress_info or {}).items() if not k.startswith("_")}
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "progress": {"done": job.progress_done, "total": job.progress_total, "info": info},
        "eta_seconds": round(job.eta_seconds, 1) if job.eta_seconds is not None else None,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "params": job.params or {},
        "result": job.result,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "deliveries": job.deliveries,
    }


def iso(value) -> str | None:  # noqa: ANN001
    # pydantic's JSON form of an aware UTC datetime ends in "Z"
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
