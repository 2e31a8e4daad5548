"""Standard Webhooks signatures (https://www.standardwebhooks.com), so receivers verify with any of
the existing libraries (the PyPI package `standardwebhooks`, svix, ...):

    webhook-id:        msg_<job id>          the same on every retry: receivers dedupe on it
    webhook-timestamp: <unix seconds>        inside the signed content: a captured delivery cannot be
                                             replayed later than the receiver's tolerance (5 minutes in
                                             the reference verifiers)
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")> [v1,<...> ...]

Each API key has its own secret (`whsec_` + base64 of 32 random bytes), shown once when the key is
made or its secret rotated. During a rotation both the new and the previous secret sign, space
separated, for `ATELIER_WEBHOOK_SECRET_OVERLAP_SECONDS`, so receivers can switch without a gap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from atelier.core import auth
from atelier.core.auth import WEBHOOK_SECRET_PREFIX as SECRET_PREFIX
from atelier.core.models import ApiKey


def _key_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secrets_: list[str] | str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every given secret (current first)."""
    keys = [secrets_] if isinstance(secrets_, str) else list(secrets_)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in keys),
    }


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float, tolerance: int = 300) -> bool:
    """The receiver's side, for tests and for receivers without a library."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lower["webhook-timestamp"])
        msg_id = lower["webhook-id"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in lower.get("webhook-signature", "").split())


def deployment_secret(settings_secret: str) -> str:
    """Jobs that no key submitted (scheduled retrains without a webhook key) sign with one derived from
    ATELIER_WEBHOOK_SECRET: the operator's own."""
    return SECRET_PREFIX + base64.b64encode(hashlib.sha256(settings_secret.encode()).digest()).decode()


def legacy_key_secret(settings_secret: str, key_id: str) -> str:
    """Keys made before per-key secrets existed sign with HMAC-SHA256(ATELIER_WEBHOOK_SECRET, key id)
    until an admin rotates theirs (POST /v1/keys/{id}/webhook-secret): one such key's receiver cannot
    forge another's deliveries, as it could when they all shared one derived secret."""
    digest = hmac.new(settings_secret.encode(), f"atelier-legacy-key:{key_id}".encode(), hashlib.sha256)
    return SECRET_PREFIX + base64.b64encode(digest.digest()).decode()


def headers_for_job(session, job, body: bytes, settings, *, now: float) -> dict[str, str]:  # noqa: ANN001
    """Content-Type, User-Agent and the Standard Webhooks headers for a job's finished webhook, signed
    with the secrets of the key that submitted it."""
    key = session.get(ApiKey, job.api_key_id) if job.api_key_id else None
    if key is None:
        found = [deployment_secret(settings.webhook_secret)]
    else:
        found = auth.signing_secrets(key, overlap_seconds=settings.webhook_secret_overlap_seconds)
        found = found or [legacy_key_secret(settings.webhook_secret, key.id)]
    signed = sign(found, f"msg_{job.id}", int(now), body)
    return {"Content-Type": "application/json", "User-Agent": "atelier-webhook/2", **signed}
