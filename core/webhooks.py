"""Webhooks: a POST of the job object, signed with HMAC-SHA256 of the exact body bytes.

    X-Atelier-Signature: sha256=<hex hmac(settings.webhook_secret, body)>
    X-Atelier-Event: job.finished
    X-Atelier-Delivery: <job id>

The body has the shape of api.schemas.JobOut (core cannot import the API; a unit test keeps the two
equal). A receiver verifies with `verify(body, header, secret)` and a constant-time compare.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from core.models import Job

SIGNATURE_HEADER = "X-Atelier-Signature"


def job_payload(job: Job) -> dict[str, Any]:
    info = {k: v for k, v in (job.progress_info or {}).items() if not k.startswith("_")}
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "progress": {"done": job.progress_done, "total": job.progress_total, "info": info},
        "eta_seconds": round(job.eta_seconds, 1) if job.eta_seconds is not None else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "params": job.params or {},
        "result": job.result,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "deliveries": job.deliveries,
    }


def _iso(value) -> str | None:  # noqa: ANN001
    # pydantic's JSON form of an aware UTC datetime ends in "Z"
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def body_of(job: Job) -> bytes:
    return json.dumps(job_payload(job), separators=(",", ":"), sort_keys=True).encode()


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    return bool(header) and hmac.compare_digest(signature(body, secret), header)


class DeliveryFailed(Exception):
    def __init__(self, reason: str, *, retryable: bool = True):
        super().__init__(reason)
        self.retryable = retryable


def deliver(url: str, body: bytes, *, secret: str, job_id: str, timeout: float = 10.0) -> int:
    """POST once; returns the status code of a 2xx, raises DeliveryFailed otherwise. Errors, time-outs,
    429 and 5xx are worth retrying; other 4xx mean the receiver refuses this body and will again."""
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(body, secret),
        "X-Atelier-Event": "job.finished",
        "X-Atelier-Delivery": job_id,
        "User-Agent": "atelier-webhook/1",
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    if 200 <= response.status_code < 300:
        return response.status_code
    retryable = response.status_code >= 500 or response.status_code in (408, 429)
    raise DeliveryFailed(f"HTTP {response.status_code}", retryable=retryable)
