"""Nightly retraining on the real stack: run keys fire once, skips without new photos, fine-tunes with."""

import random
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from atelier.catalogue.synthetic import catalogue_zip, make_catalogue

pytestmark = pytest.mark.integration

CATS = ("skirt", "shoes")
RETRAIN = {"min_new_images": 5, "preset": "tiny", "resolution": 16, "steps": 30, "categories": list(CATS)}


def upload(admin, n):
    items = make_catalogue(n, CATS, seed=random.randrange(1 << 30))
    result = admin.upload([("c.zip", catalogue_zip(items))])
    assert admin.wait(result["job"]["id"], timeout=120)["status"] == "succeeded"


def test_schedule_validation_names_the_field(stack, admin):
    import httpx

    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    r = httpx.put(f"{stack.api_url}/v1/schedules/x", headers=headers, json={"cron": "every night"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "cron"]
    r = httpx.put(
        f"{stack.api_url}/v1/schedules/x", headers=headers, json={"cron": "0 2 * * *", "params": {"steps": 0}}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "params", "steps"]
    reader = httpx.put(
        f"{stack.api_url}/v1/schedules/x",
        json={"cron": "0 2 * * *"},
        headers={"Authorization": f"Bearer {_reader(stack)}"},
    )
    assert reader.status_code == 403
    assert httpx.post(f"{stack.api_url}/v1/schedules/none/run", headers=headers).status_code == 404


def _reader(stack):
    from tests.integration.conftest import make_key

    return make_key(stack, ["read"])


def test_retrain_first_trains_and_promotes_then_skips_then_fine_tunes(stack, admin):
    from atelier.core.db import session_scope
    from atelier.training import registry

    # a training job of an earlier test on this stack (one that killed a worker under it) may still be
    # running, and would promote its model after the line below: cancelled, not waited for, since on a
    # loaded machine it can take longer than this test's whole budget to finish
    for status in ("queued", "running"):
        for earlier in admin.get("/v1/jobs", kind="train", status=status)["items"]:
            admin.http.post(f"/v1/jobs/{earlier['id']}/cancel")  # a 409 if it ended meanwhile
            assert admin.wait(earlier["id"], timeout=120)["status"] in ("cancelled", "succeeded", "failed")
    with session_scope() as session:  # this test is about the first production model
        current = registry.production(session=session)
        if current is not None:
            current.is_production = False
    upload(admin, 6)
    admin.http.put(
        "/v1/schedules/retrain-test", json={"cron": "0 2 * * *", "params": RETRAIN}
    ).raise_for_status()

    first = admin.post("/v1/schedules/retrain-test/run")
    assert "training from scratch" in first["outcome"]
    job = admin.wait(first["job_id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["promoted"] is True and "first model" in job["result"]["promotion"], job["result"]
    production = admin.get("/v1/models/production")
    assert production["id"] == job["result"]["model_version"]

    skipped = admin.post("/v1/schedules/retrain-test/run")
    assert skipped["job_id"] is None and skipped["outcome"].startswith("skipped: 0 new catalogue images")

    upload(admin, 3)  # 6 new photos >= min_new_images
    again = admin.post("/v1/schedules/retrain-test/run")
    assert f"fine-tuning production {production['id']}" in again["outcome"]
    job2 = admin.wait(again["job_id"], timeout=300)
    assert job2["status"] == "succeeded", job2["error"]
    assert job2["params"]["base_model"] == production["id"]
    new_version = admin.get(f"/v1/models/{job2['result']['model_version']}")
    assert new_version["parent_id"] == production["id"] and new_version["lineage"][0] == production["id"]
    decision = job2["result"]["promotion"]
    assert decision.startswith(("no worse", "worse")) and "KID" in decision
    kinds = {e["kind"] for e in admin.get(f"/v1/jobs/{job2['id']}/events")["items"]}
    assert ("promoted" in kinds) is job2["result"]["promoted"]
    assert ("not_promoted" in kinds) is (not job2["result"]["promoted"])
    runs = admin.get("/v1/schedules")["items"]
    assert [s for s in runs if s["name"] == "retrain-test"][0]["last_runs"][0]["run_key"] == again["run_key"]


def test_a_due_time_fires_once_whatever_the_number_of_beats(stack, admin):
    from atelier.core.db import session_scope
    from atelier.core.models import Schedule, ScheduleRun, utcnow
    from atelier.training.schedule_tasks import run_fire_schedules

    params = {**RETRAIN, "min_new_images": 10**6}  # decide quickly: skip
    admin.http.put("/v1/schedules/beat-race", json={"cron": "0 3 * * *", "params": params}).raise_for_status()
    due_at = (utcnow() - timedelta(minutes=5)).replace(second=0, microsecond=0)
    with session_scope() as session:
        session.get(Schedule, "beat-race").next_run_at = due_at
    # a second real beat process beside the stack's own, plus four concurrent ticks in this process
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "atelier.workers.celery_app",
            "beat",
            "-s",
            str(stack.data_dir / "second-beat-schedule"),
            "--pidfile",
            str(stack.data_dir / "second-beat.pid"),
        ],
        env={**__import__("os").environ, **stack.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        fired = []
        threads = [threading.Thread(target=lambda: fired.extend(run_fire_schedules())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        import time

        time.sleep(3)  # both beats tick every second meanwhile
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    key = f"beat-race:{due_at.strftime('%Y-%m-%dT%H:%M')}"
    with session_scope() as session:
        runs = session.query(ScheduleRun).filter_by(schedule_name="beat-race").all()
        assert [r.run_key for r in runs] == [key]
        # skipped when the file's first test left a production model; without one a retrain always
        # starts (from scratch), and then exactly one job for the one run
        assert runs[0].outcome.startswith(("skipped", "started job")), runs[0].outcome
        assert session.get(Schedule, "beat-race").next_run_at > utcnow()
    assert fired.count(key) <= 1
