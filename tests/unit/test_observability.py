"""/metrics, the JSON log lines and the Grafana dashboard, as an operator sees them."""

from __future__ import annotations

import io
import json
import logging
import re
import types
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(db_url, monkeypatch) -> TestClient:  # noqa: ANN001
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine

    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_METRICS_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    dispose_engine()
    from atelier.api.main import app

    yield TestClient(app)
    get_settings.cache_clear()
    dispose_engine()


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def seed_work(session) -> None:  # noqa: ANN001
    from atelier.core import jobs, units
    from atelier.core.models import utcnow

    gen = jobs.create_job(session=session, kind="generate", params={}, total=500, priority="interactive")
    gen.status, gen.progress_done = "running", 120
    for i, (status, deliveries) in enumerate(
        [("succeeded", 1), ("queued", 0), ("queued", 0), ("running", 2), ("queued", 0)]
    ):
        unit = units.add_unit(session=session, job=gen, kind="chunk", seq=i, spec={}, send=False)
        unit.status, unit.deliveries = status, deliveries
    train = jobs.create_job(session=session, kind="train", params={}, total=1000)
    train.status, train.progress_done = "succeeded", 300
    train.finished_at = utcnow() + timedelta(seconds=1)
    segment = units.add_unit(session=session, job=train, kind="train", send=False)
    segment.status, segment.deliveries = "succeeded", 2
    ingest = jobs.create_job(session=session, kind="ingest", params={})  # queued on io
    units.add_unit(session=session, job=ingest, kind="ingest", send=False)
    for kind, message, data in [
        ("chunk_retried", "chunk 1 retried", None),
        ("chunk_oom", "chunk 2 out of memory", None),
        ("chunk_oom", "chunk 2 out of memory again", None),
        ("delayed", "chunk 2 delayed by an infrastructure fault", None),
        ("requeued", "chunk 3: worker stopped heartbeating; re-queued", {"kind": "chunk"}),
        ("requeued", "training segment 1: worker stopped heartbeating; re-queued", {"kind": "train"}),
        ("running", "started on w1", None),
        ("webhook_delivered", "200", None),
        ("webhook_failed", "timeout", None),
    ]:
        jobs.add_event(session=session, job_id=gen.id, kind=kind, message=message, data=data)
    session.commit()


def test_metrics_count_what_sql_holds(api, session):
    seed_work(session)
    m = scrape(api)
    assert m[("atelier_metrics_sql_up", ())] == 1
    assert m[("atelier_jobs", (("kind", "generate"), ("state", "running")))] == 1
    assert m[("atelier_jobs", (("kind", "train"), ("state", "succeeded")))] == 1
    assert m[("atelier_jobs", (("kind", "train"), ("state", "failed")))] == 0
    assert m[("atelier_queued_units", (("queue", "generate.interactive"),))] == 3
    assert m[("atelier_queued_units", (("queue", "io"),))] == 1
    assert m[("atelier_queued_units", (("queue", "generate.bulk"),))] == 0
    assert m[("atelier_images_generated_total", ())] == 120
    assert m[("atelier_training_steps_total", ())] == 300
    assert m[("atelier_retries_total", (("reason", "cuda_oom"),))] == 2
    assert m[("atelier_retries_total", (("reason", "error"),))] == 1
    assert m[("atelier_retries_total", (("reason", "infrastructure"),))] == 1
    assert m[("atelier_redeliveries_total", (("unit", "chunk"),))] == 1
    assert m[("atelier_redeliveries_total", (("unit", "train"),))] == 1
    assert m[("atelier_redeliveries_total", (("unit", "finalize"),))] == 0
    assert m[("atelier_lease_recoveries_total", (("unit", "train"),))] == 1
    assert m[("atelier_lease_recoveries_total", (("unit", "chunk"),))] == 1
    assert m[("atelier_webhook_deliveries_total", (("outcome", "failed"),))] == 1


def test_request_latency_is_labelled_by_route_template_and_echoes_a_request_id(api):
    response = api.get("/v1/jobs/nope-123", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{16}", api.get("/healthz").headers["x-request-id"])
    m = scrape(api)
    labels = (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "401"))
    assert m[("atelier_http_request_duration_seconds_count", labels)] >= 1
    assert not [k for k in m if ("route", "/v1/jobs/nope-123") in k[1]], "raw paths must not become labels"


def test_api_log_lines_are_json_with_the_request_id(api):
    from atelier.core.logging import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("atelier.api")
    logger.addHandler(handler)
    try:
        api.get("/v1/jobs", headers={"X-Request-ID": "req-7"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == "req-7" and line["level"] == "info"
    assert line["route"] == "/v1/jobs" and line["status"] == 401
    assert line["message"].startswith("GET /v1/jobs -> 401")


def test_worker_signals_tag_log_lines_and_count_tasks():
    from prometheus_client import REGISTRY

    from atelier.core.logging import JsonFormatter
    from atelier.workers import metrics

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("atelier.test.worker")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    task = types.SimpleNamespace(name="atelier.generate_chunk")
    before = REGISTRY.get_sample_value("atelier_worker_tasks_total", {"task": task.name, "state": "SUCCESS"})
    metrics._task_started("t-1", task=task, args=(), kwargs={"job_id": "job42", "chunk_index": 3})
    log.info("encoded a batch")
    metrics._task_finished("t-1", task=task, state="SUCCESS")
    log.info("between tasks")
    log.removeHandler(handler)
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["job_id"] == "job42" and inside["unit"] == "generate_chunk[3]"
    assert inside["message"] == "encoded a batch" and "worker" in inside
    assert "job_id" not in after, "the task's context must end with the task"
    count = REGISTRY.get_sample_value("atelier_worker_tasks_total", {"task": task.name, "state": "SUCCESS"})
    assert count == (before or 0) + 1
    assert REGISTRY.get_sample_value("atelier_worker_task_duration_seconds_count", {"task": task.name}) >= 1


def exposed_series(client: TestClient) -> set[str]:
    """Every sample name the API and a worker can expose, including labelled series not yet set."""
    from prometheus_client import REGISTRY

    import atelier.workers.metrics  # noqa: F401 - registers the worker series

    names = {s.name for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples}
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    for family in REGISTRY.collect():
        if family.name.startswith("atelier_"):
            names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_grafana_dashboard_uses_only_series_that_exist(api):
    dashboard = json.loads((REPO / "ops/grafana/atelier.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\batelier_[a-z_]+\b", e)}
    assert len(used) >= 12, used
    api.get("/healthz")  # one request, so the latency histogram has samples
    missing = used - exposed_series(api)
    assert not missing, f"the dashboard queries series nobody exposes: {sorted(missing)}"
    for wanted in ("atelier_worker_gpu_memory_bytes", "atelier_images_generated_total", "atelier_jobs"):
        assert wanted in used, f"the dashboard has no panel for {wanted}"


def test_prometheus_config_scrapes_compose_services():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    config = yaml.safe_load((REPO / "ops/prometheus.yml").read_text())
    port = compose["x-atelier-env"]["ATELIER_WORKER_METRICS_PORT"]
    scraped = set()
    for job in config["scrape_configs"]:
        # production requires ATELIER_METRICS_TOKEN, so every endpoint answers 401 without it
        assert job.get("authorization", {}).get("credentials_file"), f"{job['job_name']} sends no token"
        for target in (t for c in job.get("static_configs", []) for t in c["targets"]):
            host, _, target_port = target.partition(":")
            assert host in compose["services"], f"{target} names no compose service"
            assert target_port in ("8000", port), target
            scraped.add(host)
        for sd in job.get("dns_sd_configs", []):  # every replica of a scaled service
            assert sd["type"] == "A" and str(sd["port"]) == port, sd
            for host in sd["names"]:
                assert host in compose["services"], f"{host} names no compose service"
                scraped.add(host)
    workers = {
        n
        for n, s in compose["services"].items()
        if "celery" in s.get("command", []) and "worker" in s["command"]
    }
    assert workers <= scraped, f"Prometheus scrapes no metrics of {sorted(workers - scraped)}"
