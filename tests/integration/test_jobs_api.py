"""Job rows seen through the API while real workers run them; cancel, 404s, pagination, lost workers."""

import os
import random
import signal

import httpx
import pytest

from atelier.catalogue.synthetic import draw_garment, encode
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def big_upload(admin, n: int, size: int = 640) -> dict:
    """Photos large enough that preparing them takes the worker a few seconds."""
    rng = random.Random(random.randrange(1 << 30))
    files = [(f"p{i}.png", encode(draw_garment("dress", rng, size), "PNG")) for i in range(n)]
    return admin.upload(files, category="dress")


def test_job_is_visible_while_the_worker_runs_it(stack, admin):
    job_id = big_upload(admin, 60)["job"]["id"]
    running = wait_for(
        lambda: (j := admin.job(job_id))["status"] == "running" and j,
        timeout=60,
        interval=0.02,
        what="the job to be running",
    )
    assert running["started_at"] is not None and running["progress"]["total"] == 60
    done = admin.wait(job_id, timeout=120)
    assert done["status"] == "succeeded" and done["progress"]["done"] == 60
    kinds = [e["kind"] for e in admin.get(f"/v1/jobs/{job_id}/events")["items"]]
    assert kinds == ["created", "running", "succeeded"]


def test_cancel_a_running_job(stack, admin):
    job_id = big_upload(admin, 150)["job"]["id"]
    wait_for(lambda: admin.job(job_id)["status"] == "running", timeout=60, interval=0.02, what="running")
    assert admin.post(f"/v1/jobs/{job_id}/cancel")["cancel_requested"] is True
    job = admin.wait(job_id, timeout=60)
    assert job["status"] == "cancelled"
    assert job["progress"]["done"] < 150  # stopped early; what was prepared stays
    again = httpx.post(
        f"{stack.api_url}/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {stack.admin_key}"}
    )
    assert again.status_code == 409 and "already ended as cancelled" in again.json()["detail"]


def test_unknown_job_is_404_everywhere(stack):
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    for method, path in [
        ("GET", "/v1/jobs/nope"),
        ("GET", "/v1/jobs/nope/events"),
        ("POST", "/v1/jobs/nope/cancel"),
    ]:
        r = httpx.request(method, f"{stack.api_url}{path}", headers=headers)
        assert r.status_code == 404 and "nope" in r.json()["detail"], path


def test_job_list_pagination_and_filters(stack, admin):
    for _ in range(3):
        big_upload(admin, 1, size=64)
    seen, cursor = [], None
    while True:
        page = admin.get("/v1/jobs", kind="ingest", limit=2, cursor=cursor)
        seen += [j["id"] for j in page["items"]]
        assert all(j["kind"] == "ingest" for j in page["items"])
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) >= 3
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    r = httpx.get(f"{stack.api_url}/v1/jobs", params={"status": "done"}, headers=headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status"]
    r = httpx.get(f"{stack.api_url}/v1/jobs", params={"cursor": "garbage"}, headers=headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]


def worker_pool_pids(stack) -> list[int]:
    """The Celery pool processes (children of the io worker's main process)."""
    main = stack.children["worker-cpu"].proc.pid
    out = os.popen(f"pgrep -P {main}").read().split()
    return [int(p) for p in out]


def test_sigkill_of_the_worker_mid_job_still_succeeds(stack, admin):
    job_id = big_upload(admin, 120)["job"]["id"]
    wait_for(
        lambda: admin.job(job_id)["progress"]["done"] >= 50,
        timeout=90,
        interval=0.02,
        what="the job to be half way",
    )
    worker = admin.job(job_id)["params"]  # noqa: F841 - the job row names no pid; kill every pool process
    for pid in worker_pool_pids(stack):
        os.kill(pid, signal.SIGKILL)
    job = admin.wait(job_id, timeout=120)
    assert job["status"] == "succeeded" and job["progress"]["done"] == 120
    assert job["deliveries"] >= 2
    events = [e["message"] for e in admin.get(f"/v1/jobs/{job_id}/events")["items"]]
    assert any("re-delivered" in m or "re-queued" in m for m in events), events
