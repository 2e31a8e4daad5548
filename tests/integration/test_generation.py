"""Bulk generation on the real stack: a tiny conditional GAN (16 px, trained ten steps in this process),
real Celery workers, SeaweedFS and SQL. What a design tool sees: counts, files that decode, provenance,
idempotency, 422s, cancel, a killed worker, a signed webhook, and interactive work served first."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

CATS = ["dress", "hat", "pants"]


@pytest.fixture(scope="module")
def model(stack) -> str:
    """A model version: ten training steps of the tiny 16 px GAN, checkpoint in S3, row in SQL."""
    from atelier.core.storage import get_store
    from atelier.gan.data import prepare_images
    from atelier.gan.training import checkpoint_to_bytes, new_state, state_to_checkpoint, train
    from atelier.training import registry
    from tests.unit.gan.conftest import make_catalogue, tiny_config

    state = new_state(tiny_config(num_classes=3), CATS, seed=0)
    train(state, prepare_images(make_catalogue(24), resolution=16), steps=10)
    data = checkpoint_to_bytes(state_to_checkpoint(state))
    return registry.register_checkpoint(
        get_store(), data, arch="atelier", preset="tiny", resolution=16, class_names=CATS, steps=10
    )


def submit(stack, body: dict, key: str | None = None, idem: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or stack.admin_key}"}
    if idem:
        headers["Idempotency-Key"] = idem
    return httpx.post(f"{stack.api_url}/v1/generation-jobs", json=body, headers=headers, timeout=30)


def all_images(admin, job_id: str, **filters) -> list[dict]:
    items, cursor = [], None
    while True:
        page = admin.get(f"/v1/jobs/{job_id}/images", limit=500, cursor=cursor, **filters)
        items += page["items"]
        if not (cursor := page["next_cursor"]):
            return items


def event_kinds(admin, job_id: str) -> list[str]:
    return [e["kind"] for e in admin.get(f"/v1/jobs/{job_id}/events", limit=500)["items"]]


def objects(job_id: str) -> dict[str, str]:
    from atelier.core.storage import get_store

    return {o["Key"]: o["ETag"] for o in get_store().list(f"generated/{job_id}/")}


def test_a_2000_image_job_across_many_chunks(stack, admin, model):
    from atelier.core.db import session_scope
    from atelier.core.models import GeneratedImage, WorkUnit
    from atelier.core.storage import get_store
    from atelier.generation import postprocess as imaging

    body = {
        "model": model,
        "per_category": {"dress": 700, "hat": 700, "pants": 600},
        "seed": 11,
        "chunk_size": 250,
    }
    r = submit(stack, body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["priority"] == "bulk" and r.json()["progress"]["total"] == 2000
    early = httpx.get(f"{stack.api_url}/v1/jobs/{job_id}/manifest", headers=admin.http.headers)
    assert early.status_code == 409 and "written when the job ends" in early.json()["detail"]
    job = admin.wait(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 2000, "total": 2000, "info": job["progress"]["info"]}
    assert job["result"]["generated"] == 2000 and job["result"]["missing"] == []
    assert job["result"]["chunks"] == {"succeeded": 8}

    items = all_images(admin, job_id)
    assert [i["index"] for i in items] == list(range(2000))
    assert [i["seed"] for i in items] == [11 + i for i in range(2000)]
    assert {i["category"] for i in items[:700]} == {"dress"} and {i["category"] for i in items[1400:]} == {
        "pants"
    }
    assert len(all_images(admin, job_id, category="hat")) == 700

    store = get_store()

    def check(item: dict) -> None:
        data = store.get(item["key"])
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and img.size == (16, 16)
        prov = imaging.read_provenance(data)
        assert prov["generator"] == "atelier" and prov["job_id"] == job_id and prov["model_version"] == model
        assert prov["seed"] == str(item["seed"]) and prov["index"] == str(item["index"])
        assert prov["category"] == item["category"]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, items))
    head = store.head(items[5]["key"])
    assert head["Metadata"]["job-id"] == job_id and head["Metadata"]["seed"] == "16"
    assert httpx.get(items[0]["url"]).content == store.get(items[0]["key"])  # presigned URL works

    manifest = admin.http.get(f"/v1/jobs/{job_id}/manifest")
    assert manifest.status_code == 307
    lines = httpx.get(manifest.headers["location"]).text.splitlines()
    assert len(lines) == 2000 and json.loads(lines[7])["sha256"] == items[7]["sha256"]

    # Re-run chunk bodies as a re-delivery would (resume=False: regenerate all): same bytes, no new rows.
    from atelier.core.config import get_settings
    from atelier.core.models import utcnow
    from atelier.core.units import Claimed
    from atelier.generation.tasks import run_chunk
    from atelier.workers.leases import Lease

    before = objects(job_id)
    with session_scope() as session:
        rows_before = session.query(GeneratedImage).filter_by(job_id=job_id).count()
        chunks = session.query(WorkUnit).filter_by(job_id=job_id, kind="chunk").order_by(WorkUnit.seq).all()

    for c in (chunks[0], chunks[3], chunks[-1]):  # three of the eight: the others are the same code path
        with session_scope() as session:  # a re-delivery: the unit is running again, under a new worker
            session.query(WorkUnit).filter_by(id=c.id).update(
                {"status": "running", "worker": "test", "heartbeat_at": utcnow()}
            )
        claimed = Claimed(c.id, job_id, "chunk", c.seq, c.spec, 2, 0, "test", job["params"], "bulk")
        run_chunk(Lease(claimed, get_settings()), resume=False)
        with session_scope() as session:
            session.query(WorkUnit).filter_by(id=c.id).update({"status": "succeeded", "worker": None})
    assert objects(job_id) == before
    with session_scope() as session:
        assert session.query(GeneratedImage).filter_by(job_id=job_id).count() == rows_before == 2000


def test_sigkill_of_the_gpu_worker_mid_chunk_still_gives_exactly_n(stack, admin, model):
    body = {"model": model, "count": 1500, "seed": 3, "chunk_size": 500, "format": "png"}
    job_id = submit(stack, body).json()["id"]
    wait_for(lambda: admin.job(job_id)["progress"]["done"] >= 100, timeout=60, interval=0.02, what="progress")
    main = stack.children["worker-gpu"].proc.pid
    pids = [int(p) for p in os.popen(f"pgrep -P {main}").read().split()]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    job = admin.wait(job_id, timeout=120)
    assert job["status"] == "succeeded" and job["progress"]["done"] == 1500
    items = all_images(admin, job_id)
    assert [i["index"] for i in items] == list(range(1500))
    assert len(objects(job_id)) == 1501  # 1500 images + the manifest
    # the killed chunk came back either way: its message re-delivered by the broker and claimed over
    # the stale lease, or re-queued by the reconciler
    assert {"redelivered", "requeued"} & set(event_kinds(admin, job_id))


def test_idempotency_key_repeat_and_conflict(stack, admin, model):
    body = {"model": model, "count": 4, "seed": 1}
    first = submit(stack, body, idem="abc-1")
    assert first.status_code == 202
    again = submit(stack, body, idem="abc-1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    conflict = submit(stack, {**body, "count": 5}, idem="abc-1")
    assert conflict.status_code == 409 and first.json()["id"] in conflict.json()["detail"]
    assert admin.wait(first.json()["id"], timeout=60)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 100_001}, "count"),
        ({"per_category": {"gown": 3}}, "per_category"),
        ({"count": 3, "model": "no-such-version"}, "model"),
        ({"count": 3, "size": 24}, "size"),
        ({"count": 3, "format": "bmp"}, "format"),
        ({"count": 3, "truncation": 0}, "truncation"),
        ({"count": 3, "postprocess": [{"op": "recolor", "color": "not-a-colour"}]}, "postprocess"),
    ],
)
def test_validation_422_names_the_field(stack, model, body, field):
    r = submit(stack, {"model": model, **body})
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert any(loc[:2] == ["body", field] for loc in locs), locs


def test_submit_needs_the_submit_scope(stack, model):
    from tests.integration.conftest import make_key

    r = submit(stack, {"model": model, "count": 2}, key=make_key(stack, ["read"]))
    assert r.status_code == 403


class Receiver(BaseHTTPRequestHandler):
    calls: list[tuple[int, bytes, dict]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if not Receiver.calls else 200
        Receiver.calls.append((status, body, dict(self.headers)))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_webhook_is_signed_retried_and_delivered(stack, admin, model):
    from standardwebhooks import Webhook

    from atelier.core import auth
    from atelier.core.db import session_scope

    Receiver.calls.clear()  # the class outlives one parametrization (SQLite, then PostgreSQL)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job_id = submit(stack, {"model": model, "count": 6, "webhook_url": url, "archive": True}).json()["id"]
        assert admin.wait(job_id, timeout=60)["status"] == "succeeded"
        wait_for(lambda: len(Receiver.calls) >= 2, timeout=30, what="the webhook retry")
    finally:
        server.shutdown()
    (first, _, _), (second, body, headers) = Receiver.calls[:2]
    assert (first, second) == (500, 200)
    with session_scope() as session:  # the submitting key's own signing secret
        secret = auth.find_key(session=session, secret=stack.admin_key).webhook_secret
    Webhook(secret).verify(body, headers)  # the Standard Webhooks reference verifier; raises if invalid
    sent = json.loads(body)  # the event envelope of every job kind
    assert sent["type"] == "job.succeeded" and sent["timestamp"] == sent["data"]["finished_at"]
    sent = sent["data"]
    assert sent["id"] == job_id and sent["status"] == "succeeded" and sent["result"]["archive_key"]
    kinds = wait_for(
        lambda: (k := event_kinds(admin, job_id)) and "webhook_delivered" in k and k, timeout=10, what="event"
    )
    assert "webhook_failed" in kinds
    archive = admin.http.get(f"/v1/jobs/{job_id}/archive")
    assert archive.status_code == 307
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(httpx.get(archive.headers["location"]).content)).namelist()
    assert len(names) == 7 and "manifest.jsonl" in names


def test_interactive_overtakes_bulk_then_cancel(stack, admin, model):
    # Chunks of 1000 take the worker several seconds each: without stepping aside between batches the
    # interactive job would wait for the running chunk (and, round-robin, maybe the next one).
    bulk = submit(stack, {"model": model, "count": 4000, "seed": 5, "chunk_size": 1000}).json()["id"]
    wait_for(
        lambda: admin.job(bulk)["progress"]["done"] >= 250, timeout=60, interval=0.05, what="bulk running"
    )
    t0 = time.monotonic()
    small = submit(stack, {"model": model, "count": 16, "seed": 9}).json()
    assert small["priority"] == "interactive"
    done = admin.wait(small["id"], timeout=60, interval=0.1)
    waited = time.monotonic() - t0
    assert done["status"] == "succeeded"
    bulk_now = admin.job(bulk)
    assert bulk_now["status"] == "running" and bulk_now["progress"]["done"] < 4000, bulk_now
    assert waited < 6, waited
    assert "chunk_yielded" in event_kinds(admin, bulk)
    print(
        f"interactive job of 16 finished {waited:.2f} s after submit, bulk at {bulk_now['progress']['done']}"
    )

    cancelled = admin.post(f"/v1/jobs/{bulk}/cancel")
    assert cancelled["cancel_requested"] is True
    job = admin.wait(bulk, timeout=30, interval=0.1)
    assert job["status"] == "cancelled" and 0 < job["progress"]["done"] < 4000
    assert len(all_images(admin, bulk)) == job["progress"]["done"] == job["result"]["generated"]
    assert job["result"]["chunks"].get("cancelled", 0) >= 1


def test_stream_variations_and_interpolation(stack, admin, model):
    first = submit(stack, {"model": model, "count": 4, "seed": 21}).json()["id"]
    statuses, done = [], []
    with httpx.stream(
        "GET", f"{stack.api_url}/v1/jobs/{first}/stream", headers=admin.http.headers, timeout=60
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                job = json.loads(line[6:])
                statuses.append(job["status"])
                done.append(job["progress"]["done"])
    assert statuses[-1] == "succeeded" and done == sorted(done) and done[-1] == 4

    var = submit(stack, {"mode": "variations", "image_id": f"{first}:2", "count": 3, "strength": 0.5}).json()
    lerp = submit(
        stack, {"mode": "interpolate", "image_ids": [f"{first}:0", f"{first}:1"], "count": 5}
    ).json()
    for job_id, n in ((var["id"], 3), (lerp["id"], 5)):
        job = admin.wait(job_id, timeout=60)
        assert job["status"] == "succeeded" and job["progress"]["done"] == n
        assert job["params"]["model_version"] == model


def test_tryon_op_stores_a_preview_per_image_that_the_listing_and_the_route_serve(stack, admin, model):
    from atelier.tryon.renderer import source_provenance

    body = {
        "model": model,
        "per_category": {"dress": 2, "hat": 1, "pants": 2},
        "seed": 5,
        "size": 64,
        "postprocess": [{"op": "tryon", "template": "slim-s"}],
    }
    job = admin.wait(submit(stack, body).json()["id"], timeout=90)
    assert job["status"] == "succeeded" and job["progress"]["done"] == 5
    images = all_images(admin, job["id"])
    assert len(images) == 5 and all(i["tryon_url"] for i in images)
    for image in images:
        stored = httpx.get(image["tryon_url"])  # presigned, straight from S3
        assert stored.status_code == 200 and Image.open(io.BytesIO(stored.content)).size == (240, 400)
        meta = source_provenance(stored.content)
        assert meta["template"] == "slim-s" and meta["index"] == str(image["index"])
        assert meta["source_sha256"] == image["sha256"] and meta["source_seed"] == str(image["seed"])
        assert Image.open(io.BytesIO(httpx.get(image["url"]).content)).size == (64, 64)  # unchanged
    served = admin.http.get(f"/v1/jobs/{job['id']}/images/3/tryon")  # no template: the stored one
    assert served.status_code == 200 and served.content == httpx.get(images[3]["tryon_url"]).content
    other = admin.http.get(f"/v1/jobs/{job['id']}/images/3/tryon", params={"template": "curvy-l"})
    assert other.status_code == 200 and source_provenance(other.content)["template"] == "curvy-l"
    # one preview object per image: a tryon/ prefix with exactly the five keys
    assert sorted(k for k in objects(job["id"]) if "/tryon/" in k) == sorted(
        f"generated/{job['id']}/tryon/{i:06d}-slim-s.png" for i in range(5)
    )
    bad = submit(stack, {**body, "postprocess": [{"op": "tryon", "template": "giant"}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "postprocess"]
