"""Notifications and repeat-safety on the real stack, for every job kind: an ingest (upload and data set
import), a training job, a scheduled retrain, a generation job and a trend report each POST one
Standard-Webhooks-signed event envelope that the reference verifier (PyPI `standardwebhooks`)
accepts; every submit honours Idempotency-Key and checks webhook_url against the destination policy."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from atelier.catalogue.synthetic import catalogue_zip, make_catalogue, write_deepfashion_layout, zip_folder
from atelier.client import Client, Conflict, InvalidRequest, Job, RetrainParams, WebhookEvent
from tests.integration.conftest import wait_for
from tests.integration.test_generation import model  # noqa: F401 - the tiny 16 px model fixture

pytestmark = [pytest.mark.integration, pytest.mark.one_backend("sqlite")]

CATS = ["dress", "hat", "pants"]


class Hooks(BaseHTTPRequestHandler):
    received: dict[str, list[tuple[bytes, dict[str, str]]]] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with Hooks.lock:
            Hooks.received.setdefault(self.path, []).append((body, dict(self.headers)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture
def hooks():
    Hooks.received = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def client(stack):
    with Client(stack.api_url, stack.admin_key) as c:
        yield c


def admin_webhook_secret(stack) -> str:
    from atelier.core import auth
    from atelier.core.db import session_scope

    with session_scope() as session:
        return auth.find_key(session=session, secret=stack.admin_key).webhook_secret


def deepfashion_zip(tmp_path) -> bytes:  # noqa: ANN001
    root = tmp_path / "deepfashion"
    write_deepfashion_layout(root, 1, seed=random.randrange(1 << 30))
    return zip_folder(root, "")


def test_every_job_kind_delivers_a_signed_event(stack, client, hooks, model, tmp_path):  # noqa: F811
    from standardwebhooks import Webhook

    seed = random.randrange(1 << 30)
    upload = client.catalogue.upload(
        [("c.zip", catalogue_zip(make_catalogue(6, CATS, seed=seed)))], webhook_url=f"{hooks}/ingest"
    )
    archive = tmp_path / "deepfashion.zip"
    archive.write_bytes(deepfashion_zip(tmp_path))
    imported = client.catalogue.import_dataset(archive, webhook_url=f"{hooks}/import")
    assert client.jobs.wait(upload.job.id, timeout=120).status == "succeeded"
    submitted: dict[str, Job] = {
        "ingest": upload.job,
        "import": imported,
        "generate": client.generation.submit(model=model, count=4, seed=5, webhook_url=f"{hooks}/generate"),
        "train": client.training.submit(
            preset="tiny",
            resolution=16,
            steps=4,
            categories=CATS,
            promote="never",
            webhook_url=f"{hooks}/train",
        ),
        "trend": client.trends.submit(period="month", horizon=1, webhook_url=f"{hooks}/trend"),
    }
    retrain = RetrainParams(
        min_new_images=0, preset="tiny", resolution=16, steps=4, categories=CATS, auto_promote=False,
        webhook_url=f"{hooks}/retrain",
    )  # fmt: skip
    schedule = client.schedules.put("hooked-retrain", cron="0 3 * * *", enabled=False, params=retrain)
    assert schedule.params["webhook_url"] == f"{hooks}/retrain"
    run = client.schedules.run("hooked-retrain")
    assert run.job_id, run.outcome
    submitted["retrain"] = client.jobs.get(run.job_id)

    ended = {name: client.jobs.wait(job.id, timeout=300) for name, job in submitted.items()}
    wait_for(lambda: len(Hooks.received) == len(submitted), timeout=60, what="a webhook of every job")
    secret = admin_webhook_secret(stack)
    kinds = {"import": "ingest", "retrain": "train"}
    for name, job in ended.items():
        (body, headers), *more = Hooks.received[f"/{name}"]
        assert not more, f"{name}: delivered {1 + len(more)} times"
        Webhook(secret).verify(body, headers)  # raises unless the signature is the key's
        event = WebhookEvent.model_validate_json(body)
        assert event.type == f"job.{job.status}", (name, event.type, job.status)
        assert (
            event.data.id == job.id
            and event.data.kind == kinds.get(name, name)
            and event.data.status == job.status
        )
        assert headers["webhook-id"] == f"msg_{job.id}" and set(json.loads(body)) == {
            "type",
            "timestamp",
            "data",
        }
    assert ended["generate"].status == ended["ingest"].status == ended["train"].status == "succeeded"
    assert ended["retrain"].params["retrain"] is True


def test_every_submit_honours_an_idempotency_key(stack, client, model, tmp_path):  # noqa: F811
    tag = f"{random.randrange(1 << 30)}"
    first = client.generation.submit(model=model, count=2, idempotency_key=f"gen-{tag}")
    assert client.generation.submit(model=model, count=2, idempotency_key=f"gen-{tag}").id == first.id
    with pytest.raises(Conflict, match="Idempotency-Key"):
        client.generation.submit(model=model, count=3, idempotency_key=f"gen-{tag}")

    photos = [("c.zip", catalogue_zip(make_catalogue(2, ["dress"], seed=int(tag))))]
    uploaded = client.catalogue.upload(photos, idempotency_key=f"up-{tag}")
    again = client.catalogue.upload(photos, idempotency_key=f"up-{tag}")  # every photo a duplicate now
    assert uploaded.job is not None and again.job is not None and again.job.id == uploaded.job.id
    assert all(a.duplicate for a in again.accepted)
    other = [("c.zip", catalogue_zip(make_catalogue(2, ["dress"], seed=int(tag) + 1)))]
    with pytest.raises(Conflict, match="Idempotency-Key"):
        client.catalogue.upload(other, idempotency_key=f"up-{tag}")

    client.jobs.wait(uploaded.job.id, timeout=120)  # its photos are the training's catalogue
    train = {"preset": "tiny", "resolution": 16, "steps": 5000, "categories": ["dress"], "promote": "never"}
    headers = {**client.http.headers, "Idempotency-Key": f"train-{tag}"}
    created = httpx.post(f"{stack.api_url}/v1/training-jobs", json=train, headers=headers, timeout=60)
    repeated = httpx.post(f"{stack.api_url}/v1/training-jobs", json=train, headers=headers, timeout=60)
    assert (created.status_code, repeated.status_code) == (202, 200), repeated.text
    assert created.json()["id"] == repeated.json()["id"]
    conflict = httpx.post(f"{stack.api_url}/v1/training-jobs", json={**train, "steps": 3}, headers=headers)
    assert conflict.status_code == 409 and "Idempotency-Key" in conflict.json()["detail"]
    client.jobs.cancel(created.json()["id"])

    trend = client.trends.submit(horizon=1, idempotency_key=f"trend-{tag}")
    assert client.trends.submit(horizon=1, idempotency_key=f"trend-{tag}").id == trend.id
    with pytest.raises(Conflict, match="Idempotency-Key"):
        client.trends.submit(horizon=2, idempotency_key=f"trend-{tag}")

    archive = tmp_path / "d.zip"
    archive.write_bytes(deepfashion_zip(tmp_path))
    imported = client.catalogue.import_dataset(archive, idempotency_key=f"imp-{tag}")
    assert client.catalogue.import_dataset(archive, idempotency_key=f"imp-{tag}").id == imported.id
    with pytest.raises(Conflict, match="Idempotency-Key"):
        client.catalogue.import_dataset(archive, crop=False, idempotency_key=f"imp-{tag}")

    # skipped when a production model exists; else a one-step tiny retrain
    small = {"min_new_images": 10**6, "preset": "tiny", "resolution": 16, "steps": 1, "categories": ["dress"]}
    client.schedules.put(f"idem-{tag}", cron="0 4 * * *", enabled=False, params=small)
    run_headers = {**client.http.headers, "Idempotency-Key": f"run-{tag}"}
    url = f"{stack.api_url}/v1/schedules/idem-{tag}/run"
    ran, reran = (httpx.post(url, headers=run_headers, timeout=60) for _ in range(2))
    assert (ran.status_code, reran.status_code) == (202, 200) and ran.json() == reran.json()
    for job in (first, imported):
        client.jobs.wait(job.id, timeout=120)


@pytest.mark.parametrize(
    "submit",
    ["training", "trend", "upload", "import", "schedule"],
)
def test_webhook_urls_of_every_submit_pass_the_destination_policy(stack, client, submit, tmp_path):
    refused = (
        "http://10.1.2.3/hook"  # a private address: refused unless ATELIER_WEBHOOK_ALLOW_NETWORKS opens it
    )
    calls = {
        "training": lambda: client.training.submit(
            preset="tiny", resolution=16, steps=2, webhook_url=refused
        ),
        "trend": lambda: client.trends.submit(webhook_url=refused),
        "upload": lambda: client.catalogue.upload(
            [("c.zip", catalogue_zip(make_catalogue(1, ["dress"])))], webhook_url=refused
        ),
        "import": lambda: client.catalogue.import_dataset(_zip(tmp_path), webhook_url=refused),
        "schedule": lambda: client.schedules.put(
            "refused", cron="0 5 * * *", enabled=False, params={"webhook_url": refused}
        ),
    }
    with pytest.raises(InvalidRequest, match="private address, refused by policy") as info:
        calls[submit]()
    assert info.value.field == "webhook_url"


def _zip(tmp_path):  # noqa: ANN001, ANN202
    path = tmp_path / "d.zip"
    path.write_bytes(deepfashion_zip(tmp_path))
    return path
