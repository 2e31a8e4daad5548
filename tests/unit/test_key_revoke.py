"""Revoking a key over HTTP: the API's key cache is cleared only once the revocation is committed, so
a request that reads the key in between cannot put it back in the cache as still active."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def api(db_url, monkeypatch):  # noqa: ANN001, ANN201
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine

    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_API_KEY_CACHE_SECONDS", "60")
    get_settings.cache_clear()
    dispose_engine()
    from atelier.api.main import app

    yield TestClient(app)
    get_settings.cache_clear()
    dispose_engine()


def test_the_key_cache_is_cleared_after_the_revocation_commits(api, monkeypatch):
    from atelier.api import key_cache
    from atelier.core import auth
    from atelier.core.db import session_scope

    with session_scope() as session:
        _, admin = auth.create_key(session=session, name="admin", scopes=["admin"])
        victim_key, victim = auth.create_key(session=session, name="victim", scopes=["read"])
        victim_id = victim_key.id
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {victim}"}).status_code == 200

    seen_at_clear = []
    clear = key_cache.keys.clear

    def clear_and_look() -> None:
        # what a concurrent request would read from the database at this moment
        with session_scope(readonly=True) as session:
            seen_at_clear.append(auth.find_key(session=session, secret=victim))
        clear()

    monkeypatch.setattr(key_cache.keys, "clear", clear_and_look)
    revoked = api.post(f"/v1/keys/{victim_id}/revoke", headers={"Authorization": f"Bearer {admin}"})
    assert revoked.status_code == 200
    assert seen_at_clear == [None], "the cache was cleared while the key still read as active"
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {victim}"}).status_code == 401
