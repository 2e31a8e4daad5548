"""Who may do what: an auth matrix generated from the OpenAPI document, job ownership, key management,
per-key quotas (429 then recovery), and webhook destinations refused at submit time."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import httpx
import pytest

from tests.integration.conftest import key_id, make_key, wait_for

pytestmark = pytest.mark.integration

SCOPES = ("read", "submit", "catalogue", "admin")
DUMMY = {"job_id": "0" * 32, "model_id": "nope", "name": "nope", "key_id": "nope", "index": "0"}


@pytest.fixture(scope="module")
def api(bare_stack_db):  # noqa: ANN001, ANN201
    def call(method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, f"{bare_stack_db.api_url}{path}", headers=headers, timeout=30, **kw)

    return call


@pytest.fixture(scope="module")
def keys(bare_stack_db) -> dict[str, str]:  # noqa: ANN001
    return {scope: make_key(bare_stack_db, [scope]) for scope in SCOPES}


@pytest.fixture(scope="module")
def model(bare_stack_db) -> str:  # noqa: ANN001
    """A registry row only: nothing runs in the bare stack, so no checkpoint is needed."""
    from atelier.core.db import session_scope
    from atelier.training import registry

    with session_scope(bare_stack_db.env["ATELIER_DATABASE_URL"]) as session:
        v = registry.create_version(
            session=session,
            arch="atelier",
            preset="tiny",
            resolution=16,
            class_names=["dress"],
            checkpoint_key="x",
        )
        return v.id


def operations(api) -> list[tuple[str, str, dict]]:  # noqa: ANN001
    doc = api("GET", "/openapi.json").json()
    return [
        (m.upper(), p, op) for p, ops in doc["paths"].items() for m, op in ops.items() if p.startswith("/v1/")
    ]


def test_every_v1_operation_requires_one_scope_in_the_document(api):
    ops = operations(api)
    assert len(ops) >= 20
    for method, path, op in ops:
        security = op.get("security") or []
        assert len(security) == 1 and len(security[0].get("HTTPBearer", [])) == 1, (
            f"{method} {path} has no auth"
        )
        assert {"401", "403", "422"} <= set(op["responses"]), f"{method} {path} does not declare its errors"


def test_auth_matrix(api, keys):
    """No key: 401. Each scope: 403 exactly where the document's scope is not held (admin holds all),
    otherwise a status the operation documents."""
    for method, path, op in operations(api):
        url = path.format(**DUMMY)
        body = {"json": {}} if method in ("POST", "PUT") and "catalogue/images" not in path else {}
        assert api(method, url, **body).status_code == 401, f"{method} {path}"
        (needed,) = op["security"][0]["HTTPBearer"]
        for scope, key in keys.items():
            r = api(method, url, key, **body)
            allowed = scope in (needed, "admin")
            if not allowed:
                assert r.status_code == 403, f"{scope} {method} {path}: {r.status_code}"
            else:
                assert r.status_code not in (401, 403), f"{scope} {method} {path}: {r.status_code} {r.text}"
                assert str(r.status_code) in op["responses"], (
                    f"{scope} {method} {path}: undocumented {r.status_code}"
                )


def test_revoked_and_expired_keys_get_401(api, bare_stack_db):
    from atelier.core.db import session_scope
    from atelier.core.models import ApiKey
    from atelier.core.models.base import utcnow

    admin = make_key(bare_stack_db, ["admin"])
    created = api("POST", "/v1/keys", admin, json={"name": "tool", "scopes": ["read"]}).json()
    assert created["secret"].startswith("atl_") and created["webhook_secret"].startswith("whsec_")
    assert api("GET", "/v1/jobs", created["secret"]).status_code == 200
    listed = api("GET", "/v1/keys", admin).json()["items"]
    assert any(k["id"] == created["id"] and "secret" not in k for k in listed)
    assert api("POST", f"/v1/keys/{created['id']}/revoke", admin).json()["active"] is False
    assert api("GET", "/v1/jobs", created["secret"]).status_code == 401

    later = (utcnow() + timedelta(hours=1)).isoformat()
    expiring = api(
        "POST", "/v1/keys", admin, json={"name": "t", "scopes": ["read"], "expires_at": later}
    ).json()
    assert api("GET", "/v1/jobs", expiring["secret"]).status_code == 200
    with session_scope(bare_stack_db.env["ATELIER_DATABASE_URL"]) as session:
        session.get(ApiKey, expiring["id"]).expires_at = utcnow() - timedelta(seconds=1)
    r = api("GET", "/v1/jobs", expiring["secret"])
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    past = api(
        "POST",
        "/v1/keys",
        admin,
        json={"name": "t", "scopes": ["read"], "expires_at": "2020-01-01T00:00:00Z"},
    )
    assert past.status_code == 422 and past.json()["detail"][0]["loc"] == ["body", "expires_at"]


def test_webhook_secret_rotation_returns_a_new_secret_once(api, bare_stack_db):
    admin = make_key(bare_stack_db, ["admin"])
    created = api("POST", "/v1/keys", admin, json={"name": "hooks", "scopes": ["submit"]}).json()
    rotated = api("POST", f"/v1/keys/{created['id']}/webhook-secret", admin).json()
    assert (
        rotated["webhook_secret"].startswith("whsec_")
        and rotated["webhook_secret"] != created["webhook_secret"]
    )
    assert rotated["previous_valid_until"]


def test_cli_lists_and_revokes_keys(bare_stack_db, monkeypatch):
    from click.testing import CliRunner

    from atelier.cli.main import cli
    from atelier.core import auth
    from atelier.core.config import get_settings
    from atelier.core.db import session_scope

    url = bare_stack_db.env["ATELIER_DATABASE_URL"]
    with session_scope(url) as session:
        key, secret = auth.create_key(session=session, name="cli-target", scopes=["read"])
        key_id = key.id
    monkeypatch.setenv("ATELIER_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        listing = CliRunner().invoke(cli, ["keys", "list"])
        assert listing.exit_code == 0, listing.output
        (row,) = [line for line in listing.output.splitlines() if line.startswith(key_id)]
        assert "active" in row and "cli-target" in row
        assert CliRunner().invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
        (row,) = [
            line
            for line in CliRunner().invoke(cli, ["keys", "list"]).output.splitlines()
            if line.startswith(key_id)
        ]
        assert "revoked" in row
        assert CliRunner().invoke(cli, ["keys", "revoke", "nope"]).exit_code != 0
    finally:
        get_settings.cache_clear()
    revoked = httpx.get(f"{bare_stack_db.api_url}/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert revoked.status_code == 401


def test_jobs_belong_to_their_key(api, bare_stack_db, model):
    owner, other, reader, admin = (
        make_key(bare_stack_db, s) for s in (["submit"], ["read", "submit"], ["read"], ["admin"])
    )
    hook = "https://93.184.216.34/hook?token=SECRET"
    job = api(
        "POST", "/v1/generation-jobs", owner, json={"model": model, "count": 4, "webhook_url": hook}
    ).json()
    assert job["params"]["webhook_url"] == hook
    for key in (other, reader):  # another key's job is as unknown as a missing one
        seen = api("GET", f"/v1/jobs/{job['id']}", key)
        assert seen.status_code == 404 and "no job with id" in seen.json()["detail"]
        listed = api("GET", "/v1/jobs", key).json()["items"]
        assert all(j["id"] != job["id"] and "SECRET" not in str(j["params"]) for j in listed)
    assert api("GET", f"/v1/jobs/{job['id']}", admin).json()["params"]["webhook_url"] == hook
    assert job["id"] in [j["id"] for j in api("GET", "/v1/jobs?limit=200", admin).json()["items"]]
    denied = api("POST", f"/v1/jobs/{job['id']}/cancel", other)
    assert denied.status_code == 404 and "no job with id" in denied.json()["detail"]
    cancelled = api("POST", f"/v1/jobs/{job['id']}/cancel", owner)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"  # queued: at once
    mine = api("GET", "/v1/jobs?mine=true", other).json()["items"]
    assert all(j["id"] != job["id"] for j in mine)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8333/",
        "http://[::1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_webhook_destinations_on_the_stack_host_are_refused_at_submit(api, keys, model, url):
    r = api(
        "POST", "/v1/generation-jobs", keys["submit"], json={"model": model, "count": 1, "webhook_url": url}
    )
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "webhook_url"] and "refused by policy" in err["msg"]


def test_quotas_answer_429_with_retry_after_then_recover(api, bare_stack_db, model):
    from atelier.core.db import session_scope
    from atelier.core.models import Job
    from atelier.core.models.base import utcnow

    key = make_key(bare_stack_db, ["submit"])
    ids = [
        api("POST", "/v1/generation-jobs", key, json={"model": model, "count": 2}).json()["id"]
        for _ in range(3)
    ]
    refused = api("POST", "/v1/generation-jobs", key, json={"model": model, "count": 2})
    assert refused.status_code == 429 and "ATELIER_QUOTA_ACTIVE_JOBS" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    # a cancelled job no longer counts (the bare stack has no worker: cancel ends a queued job)
    from atelier.core import jobs as job_states

    with session_scope(bare_stack_db.env["ATELIER_DATABASE_URL"]) as session:
        job_states.transition(session=session, job=session.get(Job, ids[0]), to=job_states.CANCELLED)
    assert api("POST", "/v1/generation-jobs", key, json={"model": model, "count": 2}).status_code == 202

    hourly = make_key(bare_stack_db, ["submit"])
    first = api("POST", "/v1/generation-jobs", hourly, json={"model": model, "count": 900})
    assert first.status_code == 202
    over = api("POST", "/v1/generation-jobs", hourly, json={"model": model, "count": 200})
    assert over.status_code == 429 and "ATELIER_QUOTA_IMAGES_PER_HOUR" in over.json()["detail"]
    assert 3000 < int(over.headers["Retry-After"]) <= 3600
    with session_scope(bare_stack_db.env["ATELIER_DATABASE_URL"]) as session:  # an hour passes
        session.get(Job, first.json()["id"]).created_at = utcnow() - timedelta(minutes=61)
    assert api("POST", "/v1/generation-jobs", hourly, json={"model": model, "count": 200}).status_code == 202


def test_variations_and_interpolations_without_count_count_against_the_hourly_quota(
    api, bare_stack_db, model
):
    from atelier.core import jobs as job_states
    from atelier.core.db import session_scope
    from atelier.core.models import GeneratedImage

    key = make_key(bare_stack_db, ["submit"])
    with session_scope(bare_stack_db.env["ATELIER_DATABASE_URL"]) as session:  # two made images to vary
        source = job_states.create_job(
            session=session, kind="generate", params={}, total=2, api_key_id=key_id(bare_stack_db, key)
        )
        for i in range(2):
            session.add(
                GeneratedImage(
                    job_id=source.id,
                    index=i,
                    seed=i,
                    category="dress",
                    key=f"generated/{source.id}/{i}.png",
                    sha256="0" * 64,
                    format="png",
                    width=16,
                    height=16,
                    size_bytes=1,
                    model_version_id=model,
                )  # fmt: skip
            )
        ids = [f"{source.id}:0", f"{source.id}:1"]
        for target in (job_states.RUNNING, job_states.SUCCEEDED):  # made: no longer an active job
            job_states.transition(session=session, job=source, to=target)
    # the source job's 2 images count too
    assert api("POST", "/v1/generation-jobs", key, json={"model": model, "count": 983}).status_code == 202
    variations = api("POST", "/v1/generation-jobs", key, json={"mode": "variations", "image_id": ids[0]})
    assert variations.status_code == 202 and variations.json()["progress"]["total"] == 8  # 993 of 1000
    interpolate = {"mode": "interpolate", "image_ids": ids}
    over = api("POST", "/v1/generation-jobs", key, json=interpolate)  # 10 more: 1003
    assert over.status_code == 429, over.text
    assert "10 more would pass the limit of 1000 (ATELIER_QUOTA_IMAGES_PER_HOUR)" in over.json()["detail"]
    assert api("POST", "/v1/generation-jobs", key, json={**interpolate, "count": 7}).status_code == 202


def test_interactive_is_for_small_jobs(api, keys, model):
    r = api(
        "POST",
        "/v1/generation-jobs",
        keys["admin"],
        json={"model": model, "count": 65, "priority": "interactive"},
    )
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "priority"] and "ATELIER_INTERACTIVE_MAX_IMAGES" in err["msg"]


def test_event_streams_per_key_are_capped(bare_stack_db, keys, model, api):
    reader = make_key(bare_stack_db, ["read", "submit"])
    job = api("POST", "/v1/generation-jobs", reader, json={"model": model, "count": 1}).json()["id"]
    headers = {"Authorization": f"Bearer {reader}"}
    url = f"{bare_stack_db.api_url}/v1/jobs/{job}/stream"
    with contextlib.ExitStack() as held, httpx.Client(timeout=10) as client:
        s1 = held.enter_context(
            held.enter_context(httpx.Client(timeout=10)).stream("GET", url, headers=headers)
        )
        s2 = held.enter_context(
            held.enter_context(httpx.Client(timeout=10)).stream("GET", url, headers=headers)
        )
        # keep the line iterators: dropping one closes its connection (httpcore closes on GeneratorExit)
        lines = [s1.iter_lines(), s2.iter_lines()]
        for s, it in zip((s1, s2), lines, strict=True):  # the first event arrives: both streams are open
            assert s.status_code == 200 and next(it).startswith("event: job")
        with client.stream("GET", url, headers=headers) as third:
            assert third.status_code == 429
            assert "ATELIER_QUOTA_EVENT_STREAMS" in third.read().decode()
            assert int(third.headers["Retry-After"]) > 0
        s1.close()

        def reopened() -> bool:
            with client.stream("GET", url, headers=headers) as s:
                return s.status_code == 200

        assert wait_for(reopened, timeout=15, what="a stream slot after closing one")
        del lines
