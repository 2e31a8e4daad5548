"""API keys: random secrets shown once, stored as SHA-256 hashes, each with a set of scopes."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ApiKey

SCOPES = ("read", "submit", "catalogue", "admin")
KEY_PREFIX = "atl_"


def hash_key(secret: str) -> str:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(*, session: Session, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; expected some of {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, key_hash=hash_key(secret), scopes=sorted(set(scopes)))
    session.add(key)
    session.flush()
    return key, secret


def find_key(*, session: Session, secret: str) -> ApiKey | None:
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(secret))).one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    return key


def has_scope(key: ApiKey, scope: str) -> bool:
    # admin implies every other scope
    return scope in key.scopes or "admin" in key.scopes
