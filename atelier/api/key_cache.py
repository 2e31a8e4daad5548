"""API keys looked up once and trusted for a few seconds, so that a poller costs no key query.

Keyed by the SHA-256 of the secret (the secret itself is never kept). A key found is cached; a
revoked one stops working within the TTL (ATELIER_API_KEY_CACHE_SECONDS; 0 turns the cache off).

Random bearer tokens must stay cheap: a secret that is not shaped like one this API issues
(`atl_` + 43 URL-safe characters) is refused without a thread or a query, and a well-formed secret
that was not found is remembered as unknown for the same TTL (a new key, never seen before, still
works at once: nobody asked for its secret before it existed).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from atelier.core import auth
from atelier.core.db import session_scope

MAX_ENTRIES = 10_000
# what auth.create_key issues: KEY_PREFIX + secrets.token_urlsafe(32)
_SECRET_SHAPE = re.compile(r"atl_[A-Za-z0-9_-]{43}")


def well_formed(secret: str) -> bool:
    return _SECRET_SHAPE.fullmatch(secret) is not None


@dataclass(frozen=True)
class KeyInfo:
    """What the routes use of an API key: its id (owner of jobs), name and scopes."""

    id: str
    name: str
    scopes: tuple[str, ...]
    expires_at: datetime | None = None


class KeyCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, KeyInfo]] = {}
        self._unknown: dict[str, float] = {}  # hash -> until when a secret is known not to be a key
        self._lock = threading.Lock()

    def lookup(self, secret: str, *, ttl: float) -> KeyInfo | None:
        key_hash = auth.hash_key(secret)
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] > now and self.cached(secret) is not None:
            return entry[1]
        with session_scope(readonly=True) as session:
            key = auth.find_key(session=session, secret=secret)
            info = (
                None
                if key is None
                else KeyInfo(id=key.id, name=key.name, scopes=tuple(key.scopes), expires_at=key.expires_at)
            )
        with self._lock:
            if info is None and ttl > 0:
                if len(self._unknown) >= MAX_ENTRIES:
                    self._unknown.clear()
                self._unknown[key_hash] = now + ttl
            if info is None or ttl <= 0:
                self._entries.pop(key_hash, None)
            else:
                if len(self._entries) >= MAX_ENTRIES:  # many keys: start over rather than grow
                    self._entries.clear()
                self._entries[key_hash] = (now + ttl, info)
        return info

    def known_unknown(self, secret: str) -> bool:
        """The secret was looked up within the TTL and was no key."""
        until = self._unknown.get(auth.hash_key(secret))
        return until is not None and until > time.monotonic()

    def cached(self, secret: str) -> KeyInfo | None:
        """The cached key if it is still fresh, without touching the database."""
        entry = self._entries.get(auth.hash_key(secret))
        if entry is None or entry[0] <= time.monotonic():
            return None
        info = entry[1]
        if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
            return None  # an expiry takes effect on time, cache or not
        return info

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._unknown.clear()


keys = KeyCache()


def decided(secret: str) -> tuple[bool, KeyInfo | None]:
    """(True, key or None) when the answer needs no query: a malformed or known-unknown secret, or a
    cached key; (False, None) when only the database can tell."""
    if not well_formed(secret) or keys.known_unknown(secret):
        return True, None
    key = keys.cached(secret)
    return key is not None, key


async def resolve(secret: str) -> KeyInfo | None:
    """The key for a secret: from the cache on the event loop, else read on a thread (and cached)."""
    from anyio import to_thread

    from atelier.core.config import get_settings

    known, key = decided(secret)
    if known:
        return key  # no thread, no query
    if key is None:
        ttl = get_settings().api_key_cache_seconds
        key = await to_thread.run_sync(lambda: keys.lookup(secret, ttl=ttl))
    return key
