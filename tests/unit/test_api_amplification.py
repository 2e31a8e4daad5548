"""Cheap refusals ahead of costly work, through the real app and middleware on SQL (SQLite, and PostgreSQL
when configured): bearer tokens not shaped like a key cost no query, an unknown one is remembered, a pool
that has no connection left answers 503 with Retry-After (not a 500), and gallery form posts have a body
limit before the form is parsed or the session looked at."""

from __future__ import annotations

import secrets

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event


@pytest.fixture
def app_client(db_url, monkeypatch):  # noqa: ANN001, ANN201
    from atelier.api import key_cache
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine

    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_API_KEY_CACHE_SECONDS", "60")
    get_settings.cache_clear()
    dispose_engine()
    key_cache.keys.clear()
    from atelier.api.main import app

    yield TestClient(app)
    key_cache.keys.clear()
    get_settings.cache_clear()
    dispose_engine()


@pytest.fixture
def statements():
    """SQL statements run by this process's engine while the test runs."""
    from atelier.core.db import get_engine

    seen: list[str] = []
    engine = get_engine()

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_tokens_not_shaped_like_a_key_cost_no_query(app_client, statements):
    for token in ("x", "atl_short", "atl_" + "!" * 43, secrets.token_hex(64), "atl_" + "a" * 44):
        r = app_client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert statements == []


def test_an_unknown_well_formed_token_is_looked_up_once(app_client, statements):
    token = "atl_" + secrets.token_urlsafe(32)
    for _ in range(5):
        assert app_client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert 1 <= len(statements) <= 2  # the first request's lookup only


def test_a_new_key_works_at_once_despite_the_negative_cache(app_client):
    from atelier.core import auth
    from atelier.core.db import session_scope

    with session_scope() as session:
        _, secret = auth.create_key(session=session, name="fresh", scopes=["read"])
    assert app_client.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_no_connection_for_the_key_lookup_is_a_503_with_retry_after(db_url, monkeypatch):
    from atelier.api import key_cache
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine, get_engine

    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_DB_POOL_SIZE", "1")
    monkeypatch.setenv("ATELIER_DB_MAX_OVERFLOW", "0")
    monkeypatch.setenv("ATELIER_DB_POOL_TIMEOUT_SECONDS", "0.2")
    get_settings.cache_clear()
    dispose_engine()
    key_cache.keys.clear()
    from atelier.api.main import app

    held = get_engine().connect()  # the pool's only connection
    try:
        r = TestClient(app).get(
            "/v1/jobs", headers={"Authorization": f"Bearer atl_{secrets.token_urlsafe(32)}"}
        )
    finally:
        held.close()
        get_settings.cache_clear()
        dispose_engine()
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1


def test_a_large_login_form_is_refused_before_it_is_parsed(app_client):
    big = {"api_key": "x" * 200_000}
    r = app_client.post("/ui/login", data=big)
    assert r.status_code == 413 and "ATELIER_MAX_FORM_BODY_BYTES" in r.text

    def endless():  # no Content-Length: the limit is counted as the body streams
        for _ in range(1000):
            yield b"api_key=" + b"x" * 65536

    r = app_client.post(
        "/ui/login", content=endless(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413 and "ATELIER_MAX_FORM_BODY_BYTES" in r.text


def test_a_form_post_of_a_signed_out_browser_is_limited_too(app_client):
    r = app_client.post("/ui/generate", data={"model": "x" * 100_000})
    assert r.status_code == 413 and "ATELIER_MAX_FORM_BODY_BYTES" in r.text


def test_a_key_lookup_takes_a_concurrency_slot(app_client, statements):
    """With every slot taken, a token that needs a query waits its turn like a request (503 +
    Retry-After, no query), while a malformed one is still refused at once."""
    from atelier.api import overload
    from atelier.core.config import get_settings

    taken = get_settings().api_max_concurrent_requests
    overload.slots.in_flight += taken
    try:
        unknown = "atl_" + secrets.token_urlsafe(32)
        busy = app_client.get("/v1/jobs", headers={"Authorization": f"Bearer {unknown}"})
        malformed = app_client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    finally:
        overload.slots.in_flight -= taken
    assert busy.status_code == 503 and "ATELIER_API_MAX_CONCURRENT_REQUESTS" in busy.text
    assert int(busy.headers["Retry-After"]) >= 1
    assert malformed.status_code == 401
    assert statements == []
