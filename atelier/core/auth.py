"""API keys: random secrets shown once, stored as SHA-256 hashes, each with a set of scopes, an optional
expiry, and its own Standard Webhooks signing secret (see atelier/webhooks/signing.py)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from atelier.core.models import ApiKey
from atelier.core.models.base import utcnow

SCOPES = ("read", "submit", "catalogue", "admin")
KEY_PREFIX = "atl_"
WEBHOOK_SECRET_PREFIX = "whsec_"


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def hash_key(secret: str) -> str:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    *, session: Session, name: str, scopes: list[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; expected some of {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if expires_at is not None and expires_at <= utcnow():
        raise ValueError("expires_at must be in the future")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
        webhook_secret=new_webhook_secret(),
    )
    session.add(key)
    session.flush()
    return key, secret


def is_active(key: ApiKey, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def find_key(*, session: Session, secret: str) -> ApiKey | None:
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(secret))).one_or_none()
    if key is None or not is_active(key):
        return None
    return key


def has_scope(key: ApiKey, scope: str) -> bool:
    # admin implies every other scope
    return scope in key.scopes or "admin" in key.scopes


def revoke_key(*, session: Session, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def rotate_webhook_secret(*, session: Session, key: ApiKey) -> str:
    """A new signing secret; the old one keeps signing for ATELIER_WEBHOOK_SECRET_OVERLAP_SECONDS."""
    key.webhook_secret_previous = key.webhook_secret
    key.webhook_secret = new_webhook_secret()
    key.webhook_secret_rotated_at = utcnow()
    return key.webhook_secret


def signing_secrets(key: ApiKey, *, overlap_seconds: int, now: datetime | None = None) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous during the overlap."""
    now = now or utcnow()
    found = [key.webhook_secret] if key.webhook_secret else []
    rotated = key.webhook_secret_rotated_at
    if key.webhook_secret_previous and rotated and now - rotated < timedelta(seconds=overlap_seconds):
        found.append(key.webhook_secret_previous)
    return found
