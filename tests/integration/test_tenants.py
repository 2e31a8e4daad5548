"""Hostile keys against each other, over HTTP on the bare stack (every SQL backend): outputs belong to
the key that submitted them (404 to any other, as if they did not exist, and 422 naming the field when
named as an input), forced promotion is an admin's, tolerances are bounded, quotas hold under parallel
submits and never refuse an idempotent retry, and odd values are 422s, not 500s. After each attack the
owner still reads everything it had. Gallery pages: tests/unit/test_ui_pages.py."""

from __future__ import annotations

import threading

import httpx
import pytest

from atelier.core.pagination import encode_cursor
from tests.integration.conftest import make_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(bare_stack_db):  # noqa: ANN001, ANN201
    def call(method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})} if key else {}
        return httpx.request(method, f"{bare_stack_db.api_url}{path}", headers=headers, timeout=60, **kw)

    return call


@pytest.fixture(scope="module")
def model(bare_stack_db) -> str:  # noqa: ANN001
    from atelier.core.db import session_scope
    from atelier.training import registry

    with session_scope(bare_stack_db.env["ATELIER_DATABASE_URL"]) as session:
        return registry.create_version(
            session=session,
            arch="atelier",
            preset="tiny",
            resolution=16,
            class_names=["dress"],
            checkpoint_key="x",
        ).id


@pytest.fixture(scope="module")
def owned(bare_stack_db, api, model):  # noqa: ANN001, ANN201
    """An owner key with a generation job that has two images, a manifest and an archive, and a
    succeeded trend report; another key with read and submit; an admin."""
    from atelier.core import jobs as job_states
    from atelier.core.db import session_scope
    from atelier.core.models import GeneratedImage, Job

    owner, other, admin = (make_key(bare_stack_db, s) for s in (["read", "submit"],) * 2 + (["admin"],))
    gen = api("POST", "/v1/generation-jobs", owner, json={"model": model, "count": 2, "archive": True})
    trend = api("POST", "/v1/trend-reports", owner, json={"period": "month"})
    assert gen.status_code == 202 and trend.status_code == 202, (gen.text, trend.text)
    gen_id, trend_id = gen.json()["id"], trend.json()["id"]
    with session_scope(bare_stack_db.env["ATELIER_DATABASE_URL"]) as session:
        for i in range(2):
            session.add(
                GeneratedImage(
                    job_id=gen_id,
                    index=i,
                    seed=i,
                    category="dress",
                    key=f"generated/{gen_id}/{i}.png",
                    sha256="0" * 64,
                    format="png",
                    width=16,
                    height=16,
                    size_bytes=1,
                    model_version_id=model,
                )  # fmt: skip
            )
        job = session.get(Job, gen_id)
        job.result = {"manifest_key": f"generated/{gen_id}/manifest.jsonl", "archive_key": "a.zip"}
        for target in (job_states.RUNNING, job_states.SUCCEEDED):
            job_states.transition(session=session, job=job, to=target)
        report = session.get(Job, trend_id)
        report.result = {"summary": {"next_mix": {"dress": 1.0}, "rising_palette": ["#aa0000"]}}
        for target in (job_states.RUNNING, job_states.SUCCEEDED):
            job_states.transition(session=session, job=report, to=target)
    return {"owner": owner, "other": other, "admin": admin, "gen": gen_id, "trend": trend_id, "model": model}


def reads(job: str, trend: str) -> list[str]:
    return [
        f"/v1/jobs/{job}",
        f"/v1/jobs/{job}/events",
        f"/v1/jobs/{job}/images",
        f"/v1/jobs/{job}/manifest",
        f"/v1/jobs/{job}/archive",
        f"/v1/jobs/{job}/images/0/tryon",
        f"/v1/jobs/{job}/stream",
        f"/v1/trend-reports/{trend}",
    ]


def test_another_keys_jobs_and_outputs_are_404_as_if_missing(api, owned):
    other, owner, admin = owned["other"], owned["owner"], owned["admin"]
    for path in reads(owned["gen"], owned["trend"]):
        seen = api("GET", path, other, follow_redirects=False)
        missing = api("GET", path.replace(owned["gen"], "0" * 32).replace(owned["trend"], "0" * 32), other)
        assert seen.status_code == 404 and missing.status_code == 404, path
        assert seen.json()["detail"].startswith("no job with id"), path  # the same words as a missing one
    cancel = api("POST", f"/v1/jobs/{owned['gen']}/cancel", other)
    assert cancel.status_code == 404
    listed = [j["id"] for j in api("GET", "/v1/jobs?limit=500", other).json()["items"]]
    assert owned["gen"] not in listed and owned["trend"] not in listed
    # nothing of the owner's was lost or changed, and an admin sees every job
    for key in (owner, admin):
        assert api("GET", f"/v1/jobs/{owned['gen']}", key).json()["status"] == "succeeded"
        assert len(api("GET", f"/v1/jobs/{owned['gen']}/images", key).json()["items"]) == 2
        assert api("GET", f"/v1/jobs/{owned['gen']}/manifest", key, follow_redirects=False).status_code == 307
        listed = [j["id"] for j in api("GET", "/v1/jobs?limit=500", key).json()["items"]]
        assert owned["gen"] in listed and owned["trend"] in listed


def test_another_keys_images_and_reports_are_not_inputs(api, owned):
    gen, trend = owned["gen"], owned["trend"]
    attacks = [
        ({"mode": "variations", "image_id": f"{gen}:0"}, "image_id"),
        ({"mode": "interpolate", "image_ids": [f"{gen}:0", f"{gen}:1"]}, "image_ids"),
        ({"model": owned["model"], "follow_report": {"report": trend, "count": 2}}, "follow_report"),
    ]
    for body, field in attacks:
        refused = api("POST", "/v1/generation-jobs", owned["other"], json=body)
        assert refused.status_code == 422, refused.text
        (err,) = refused.json()["detail"]
        assert err["loc"] == ["body", field] and "no " in err["msg"], err
    # the owner may use its own (and the quota of 3 active jobs leaves room for exactly these)
    for body, _ in attacks:
        assert api("POST", "/v1/generation-jobs", owned["owner"], json=body).status_code == 202, body


def test_forced_promotion_is_an_admins_and_tolerances_are_bounded(api, bare_stack_db):
    submit, admin = make_key(bare_stack_db, ["submit"]), make_key(bare_stack_db, ["admin"])
    forced = api(
        "POST", "/v1/training-jobs", submit, json={"preset": "tiny", "steps": 1, "promote": "always"}
    )
    assert forced.status_code == 403 and "promote" in forced.json()["detail"], forced.text
    wide = api("POST", "/v1/training-jobs", submit, json={"preset": "tiny", "steps": 1, "kid_tolerance": 1e9})
    assert wide.status_code == 422
    (err,) = wide.json()["detail"]
    assert err["loc"] == ["body", "kid_tolerance"] and "ATELIER_MAX_KID_TOLERANCE=0.1" in err["msg"]
    # an admin passes the promote check: the next refusal is the unknown base model, checked after it
    by_admin = api(
        "POST",
        "/v1/training-jobs",
        admin,
        json={"preset": "tiny", "steps": 1, "promote": "always", "base_model": "no-such-model"},
    )
    assert by_admin.status_code == 422 and by_admin.json()["detail"][0]["loc"] == ["body", "base_model"]
    schedule = {"cron": "0 2 * * *", "enabled": False, "params": {"kid_tolerance": 5}}
    wide_schedule = api("PUT", "/v1/schedules/wide-gate", admin, json=schedule)
    assert wide_schedule.status_code == 422
    (err,) = wide_schedule.json()["detail"]
    assert err["loc"] == ["body", "params", "kid_tolerance"] and "ATELIER_MAX_KID_TOLERANCE" in err["msg"]


def test_parallel_submits_at_the_quota_accept_exactly_the_quota_and_retries_get_their_job(api, bare_stack_db):
    """ATELIER_QUOTA_ACTIVE_TREND_JOBS=3 on the bare stack: 8 submits at once, 3 accepted."""
    key = make_key(bare_stack_db, ["read", "submit"])
    start = threading.Barrier(8)
    answers: list[httpx.Response] = [None] * 8  # type: ignore[list-item]

    def submit(i: int) -> None:
        start.wait()
        answers[i] = api(
            "POST",
            "/v1/trend-reports",
            key,
            json={"period": "week"},
            headers={"Idempotency-Key": f"race-{i}"},
        )

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 3 + [429] * 5, [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 429)
    assert "ATELIER_QUOTA_ACTIVE_TREND_JOBS" in refused.json()["detail"] and int(
        refused.headers["Retry-After"]
    )
    listed = api("GET", "/v1/jobs?kind=trend", key).json()["items"]
    assert len(listed) == 3
    # the quota is full, yet a retry of an accepted submit is answered with its job
    for i, answer in enumerate(answers):
        if answer.status_code == 202:
            again = api(
                "POST",
                "/v1/trend-reports",
                key,
                json={"period": "week"},
                headers={"Idempotency-Key": f"race-{i}"},
            )
            assert again.status_code == 200 and again.json()["id"] == answer.json()["id"]


def test_odd_values_are_422s_naming_the_field(api, bare_stack_db, model):
    key = make_key(bare_stack_db, ["read", "submit"])
    job = api("POST", "/v1/generation-jobs", key, json={"model": model, "count": 1}).json()["id"]
    huge = encode_cursor(10**30)
    for path in (f"/v1/jobs/{job}/events", f"/v1/jobs/{job}/images"):
        r = api("GET", f"{path}?cursor={huge}", key)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"], r.text
    twice = api(
        "POST", "/v1/generation-jobs", key, json={"model": model, "per_category": {"Dress": 1, "dress ": 2}}
    )
    assert twice.status_code == 422
    (err,) = twice.json()["detail"]
    assert err["loc"] == ["body", "per_category"] and "listed twice" in err["msg"]
    site_local = {"model": model, "count": 1, "webhook_url": "http://[fec0::1]/hook"}
    refused = api("POST", "/v1/generation-jobs", key, json=site_local)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "webhook_url"]
    assert api("GET", f"/v1/jobs/{job}", key).json()["status"] == "queued"
