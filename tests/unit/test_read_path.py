"""The status-polling path: ETag/304, the cached key lookup and its revocation, 503 under overload."""

import time

import pytest
from fastapi.testclient import TestClient

from atelier.core import auth, jobs, units
from atelier.core.db import dispose_engine, get_engine, session_scope
from atelier.core.models import ApiKey, Job, utcnow


@pytest.fixture
def api(db_url, monkeypatch):
    """The app on the test database; settings from the environment as in production."""
    from atelier.api import key_cache
    from atelier.api.main import app
    from atelier.core.config import get_settings

    def configure(**env):
        for name, value in {"DATABASE_URL": db_url, **env}.items():
            monkeypatch.setenv(f"ATELIER_{name}", str(value))
        get_settings.cache_clear()
        dispose_engine()  # the pool is built from the settings
        key_cache.keys.clear()
        return TestClient(app)

    yield configure
    get_settings.cache_clear()
    dispose_engine()
    key_cache.keys.clear()


def new_key(scopes=("read", "submit")) -> tuple[str, str]:
    with session_scope() as session:
        key, secret = auth.create_key(session=session, name="poller", scopes=list(scopes))
        return key.id, secret


def new_job(key_id: str) -> str:
    """A job of `key_id` (a key sees its own jobs only)."""
    with session_scope() as session:
        return jobs.create_job(session=session, kind="ingest", params={"image_ids": []}, api_key_id=key_id).id


def test_job_status_has_an_etag_and_an_unchanged_job_answers_304(api):
    client = api()
    key_id, secret = new_key()
    job_id = new_job(key_id)
    headers = {"Authorization": f"Bearer {secret}"}
    first = client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert first.status_code == 200 and first.json()["status"] == "queued"
    assert set(first.json()) >= {"id", "kind", "status", "progress", "params", "result", "deliveries"}
    etag = first.headers["etag"]
    again = client.get(f"/v1/jobs/{job_id}", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    with session_scope() as session:
        units.cancel_job(session=session, job=session.get(Job, job_id))
    changed = client.get(f"/v1/jobs/{job_id}", headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled"
    assert changed.headers["etag"] != etag
    missing = client.get("/v1/jobs/nope", headers=headers)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def revoke(key_id: str) -> None:
    with session_scope() as session:
        session.get(ApiKey, key_id).revoked_at = utcnow()


def test_a_revoked_key_stops_working_within_the_cache_ttl(api):
    client = api(API_KEY_CACHE_SECONDS=0.5)
    key_id, secret = new_key()
    job_id = new_job(key_id)
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
    revoke(key_id)
    time.sleep(0.6)
    refused = client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert refused.status_code == 401 and refused.json()["detail"] == "unknown, revoked or expired API key"


def test_without_the_cache_a_revoked_key_is_refused_at_once(api):
    client = api(API_KEY_CACHE_SECONDS=0)
    key_id, secret = new_key()
    job_id = new_job(key_id)
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
    revoke(key_id)
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 401


def test_no_free_connection_is_a_quick_503_with_retry_after(api):
    client = api(DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT_SECONDS=0.3, API_RETRY_AFTER_SECONDS=2)
    key_id, secret = new_key()
    job_id = new_job(key_id)
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200  # the key is now cached
    with get_engine().connect():  # someone else holds the only connection
        t0 = time.monotonic()
        busy = client.get("/v1/jobs", headers=headers)
        took = time.monotonic() - t0
        status = client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "2"
    assert "ATELIER_DB_POOL_SIZE" in busy.json()["detail"]
    assert took < 2.0
    # on SQLite a status poll reads on the event loop's own connection: it still answers
    assert status.status_code == (200 if get_engine().dialect.name == "sqlite" else 503)
    assert client.get("/v1/jobs", headers=headers).status_code == 200


def test_too_many_requests_in_flight_are_answered_503_at_once():
    import asyncio

    from atelier.api.overload import ConcurrencyLimit

    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario():
        limited = ConcurrencyLimit(slow_app)
        sent: list[list[dict]] = [[] for _ in range(101)]

        async def call(i):
            async def send(message):
                sent[i].append(message)

            await limited({"type": "http", "path": "/v1/jobs/x"}, None, send)

        first = [asyncio.create_task(call(i)) for i in range(100)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(call(100), timeout=1)  # answered while the others still run
        release.set()
        await asyncio.gather(*first)
        return sent

    sent = asyncio.run(scenario())
    assert sent[100][0]["status"] == 503 and (b"retry-after", b"1") in sent[100][0]["headers"]
    assert b"ATELIER_API_MAX_CONCURRENT_REQUESTS" in sent[100][1]["body"]
    assert all(messages[0]["status"] == 200 for messages in sent[:100])


def test_job_status_has_the_same_json_as_the_job_list(api):
    client = api()
    key_id, secret = new_key()
    job_id = new_job(key_id)
    headers = {"Authorization": f"Bearer {secret}"}
    listed = client.get("/v1/jobs", headers=headers).json()["items"]
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).json() == listed[0]
