"""What ATELIER_ENV=production refuses at start-up, the metrics token, and the docs switch.

Each refusal must name the setting to change, since the operator reads it in a container's log.
"""

from __future__ import annotations

import logging
import threading
import types
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from atelier.core.config import Settings

# A production configuration that passes every check; each test spoils one field of it.
GOOD = {
    "env": "production",
    "database_url": "postgresql+psycopg://atelier:Vq7x-long-pw@postgres:5432/atelier",
    "broker_url": "redis://:r3dis-pw@redis:6379/0",
    "s3_endpoint_url": "http://seaweedfs:8333",
    "s3_public_endpoint_url": "https://s3.example.com",
    "s3_secret_key": "s3-secret-key",
    "webhook_secret": "hook-secret",
    "metrics_token": "scrape-token",
    "ui_session_secret": "u" * 32,
}


@pytest.fixture(autouse=True)
def _no_production_env(monkeypatch):
    for name in (
        "ENV",
        "DATABASE_URL",
        "BROKER_URL",
        "S3_PUBLIC_ENDPOINT_URL",
        "METRICS_TOKEN",
        "PUBLIC_DOCS",
    ):
        monkeypatch.delenv(f"ATELIER_{name}", raising=False)


def test_a_complete_production_configuration_is_accepted():
    assert Settings(**GOOD).env == "production"
    # SQLite, a RabbitMQ broker with its own password, several Redis URLs for fail-over
    Settings(**{**GOOD, "database_url": "sqlite:////data/atelier.db"})
    Settings(**{**GOOD, "broker_url": "amqp://atelier:r4bbit-pw@rabbit:5672//"})
    Settings(**{**GOOD, "broker_url": "redis://:a-pw@r1:6379/0;redis://:a-pw@r2:6379/0"})


@pytest.mark.parametrize(
    ("field", "value", "setting"),
    [
        (
            "database_url",
            "postgresql+psycopg://atelier:atelier@postgres:5432/atelier",
            "ATELIER_DATABASE_URL",
        ),
        ("database_url", "postgresql+psycopg://atelier@postgres:5432/atelier", "ATELIER_DATABASE_URL"),
        ("database_url", "postgresql://postgres:postgres@db/atelier", "ATELIER_DATABASE_URL"),
        ("broker_url", "redis://redis:6379/0", "ATELIER_BROKER_URL"),
        ("broker_url", "redis://:a-pw@r1:6379/0;redis://r2:6379/0", "ATELIER_BROKER_URL"),
        ("broker_url", "amqp://guest:guest@rabbit:5672//", "ATELIER_BROKER_URL"),
        ("s3_public_endpoint_url", "http://localhost:8333", "ATELIER_S3_PUBLIC_ENDPOINT_URL"),
        ("s3_public_endpoint_url", "http://127.0.0.1:8333", "ATELIER_S3_PUBLIC_ENDPOINT_URL"),
        ("metrics_token", None, "ATELIER_METRICS_TOKEN"),
        ("metrics_token", "", "ATELIER_METRICS_TOKEN"),
        ("s3_secret_key", "atelier-dev-secret", "ATELIER_S3_SECRET_KEY"),
    ],
)
def test_production_refuses_an_open_default_and_names_the_setting(field, value, setting):
    with pytest.raises(ValidationError, match=setting):
        Settings(**{**GOOD, field: value})
    Settings(**{**GOOD, "env": "development", field: value})  # development keeps its defaults


def test_without_a_public_endpoint_the_internal_one_must_not_be_localhost():
    bad = {**GOOD, "s3_public_endpoint_url": None, "s3_endpoint_url": "http://127.0.0.1:8333"}
    with pytest.raises(ValidationError, match="ATELIER_S3_PUBLIC_ENDPOINT_URL"):
        Settings(**bad)
    Settings(**{**bad, "s3_endpoint_url": "https://s3.eu-west-1.amazonaws.com"})


def test_the_production_refusals_read_the_environment(monkeypatch):
    for field, value in GOOD.items():
        monkeypatch.setenv(f"ATELIER_{field.upper()}", value)
    monkeypatch.setenv("ATELIER_BROKER_URL", "redis://redis:6379/0")
    with pytest.raises(ValidationError, match="ATELIER_BROKER_URL"):
        Settings()


# ------------------------------------------------------------------------------ the API's endpoints
@pytest.fixture
def fresh_settings(monkeypatch, db_url):  # noqa: ANN001
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine

    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_METRICS_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    dispose_engine()
    yield monkeypatch
    get_settings.cache_clear()
    dispose_engine()


def test_metrics_asks_for_the_token_when_one_is_set(fresh_settings):
    from atelier.api.main import app
    from atelier.core.config import get_settings

    fresh_settings.setenv("ATELIER_METRICS_TOKEN", "scrape-token")
    get_settings.cache_clear()
    client = TestClient(app)
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert "ATELIER_METRICS_TOKEN" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # an API key is not the metrics token
    assert client.get("/metrics", headers={"Authorization": "scrape-token"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert ok.status_code == 200 and "atelier_metrics_sql_up" in ok.text

    fresh_settings.delenv("ATELIER_METRICS_TOKEN")
    get_settings.cache_clear()
    assert client.get("/metrics").status_code == 200  # development: open, as before


@pytest.mark.parametrize(
    ("env", "public", "served"),
    [("development", None, True), ("production", None, False), ("production", "true", True)],
)
def test_docs_and_schema_are_off_in_production_unless_public(monkeypatch, env, public, served):
    """No SQL involved: the app is only built and asked for its documentation routes."""
    from atelier.api.main import create_app
    from atelier.core.config import get_settings

    if env == "production":
        for field, value in GOOD.items():
            monkeypatch.setenv(f"ATELIER_{field.upper()}", value)
    if public:
        monkeypatch.setenv("ATELIER_PUBLIC_DOCS", public)
    get_settings.cache_clear()
    try:
        app = create_app()
        client = TestClient(app)
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (client.get(path).status_code == 200) is served, path
        # the client's contract test reads the schema from the app object either way
        assert "/v1/jobs/{job_id}" in app.openapi()["paths"]
        assert client.get("/healthz").status_code == 200
    finally:
        get_settings.cache_clear()


# --------------------------------------------------------------------------- the workers' endpoint
def scrape(port: int, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("token", ["worker-token", None])
def test_worker_metrics_endpoint_honours_the_token(token):
    from atelier.workers import metrics

    metrics.record_device("cpu", "no_gpu")
    server = metrics.serve_metrics(0, token, host="127.0.0.1")
    try:
        port = server.server_port
        status, body = scrape(port, token)
        assert status == 200
        assert 'atelier_worker_device_info{device="cpu",reason="no_gpu"} 1.0' in body
        if token:
            status, body = scrape(port, None)
            assert status == 401 and "ATELIER_METRICS_TOKEN" in body
            assert scrape(port, "other")[0] == 401
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------ the device a worker picks
def fake_torch(*, built: bool, available: bool, warning: str | None = None):  # noqa: ANN202
    import warnings

    def is_available() -> bool:
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=1)
        return available

    return types.SimpleNamespace(
        __version__="2.13.0",
        version=types.SimpleNamespace(cuda="13.0" if built else None),
        backends=types.SimpleNamespace(cuda=types.SimpleNamespace(is_built=lambda: built)),
        cuda=types.SimpleNamespace(is_available=is_available, get_device_name=lambda i: "NVIDIA H100"),
    )


OLD_DRIVER = (
    "CUDA initialization: The NVIDIA driver on your system is too old (found version 12020). "
    "Please update your GPU driver."
)


@pytest.mark.parametrize(
    ("torch", "device", "reason", "words"),
    [
        (fake_torch(built=True, available=True), "cuda:0", "", "H100"),
        (fake_torch(built=False, available=False), "cpu", "cpu_build", "without CUDA"),
        (fake_torch(built=True, available=False), "cpu", "no_gpu", "no GPU is visible"),
        (fake_torch(built=True, available=False, warning=OLD_DRIVER), "cpu", "cuda_init", "too old"),
    ],
)
def test_device_diagnosis_names_why_a_cuda_build_runs_on_the_cpu(torch, device, reason, words):
    from atelier.workers.device import diagnose

    got_device, got_reason, detail = diagnose(torch)
    assert (got_device, got_reason) == (device, reason)
    assert words in detail


def test_worker_device_warns_once_and_exports_the_gauge(monkeypatch, caplog):
    import sys

    from prometheus_client import REGISTRY

    from atelier.workers import device

    monkeypatch.setitem(sys.modules, "torch", fake_torch(built=True, available=False, warning=OLD_DRIVER))
    device.worker_device.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="atelier.worker.device"):
            assert device.worker_device() == "cpu"
            assert device.worker_device() == "cpu"
    finally:
        device.worker_device.cache_clear()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.records
    assert "cuda_init" in warnings[0].getMessage() and "too old" in warnings[0].getMessage()
    labels = {"device": "cpu", "reason": "cuda_init"}
    assert REGISTRY.get_sample_value("atelier_worker_device_info", labels) == 1


def test_serve_metrics_threads_are_daemons():
    """A worker's warm shutdown must not wait on the metrics server."""
    from atelier.workers import metrics

    server = metrics.serve_metrics(0, None, host="127.0.0.1")
    try:
        names = {t.name: t.daemon for t in threading.enumerate()}
        assert names.get("worker-metrics") is True
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ the work directory
def test_scratch_files_go_under_the_work_dir_and_are_removed(monkeypatch, tmp_path):
    from atelier.core.config import get_settings
    from atelier.core.scratch import scratch_dir

    work = tmp_path / "work" / "atelier"  # made on first use: a fresh volume may be empty
    monkeypatch.setenv("ATELIER_WORK_DIR", str(work))
    get_settings.cache_clear()
    try:
        with scratch_dir("atelier-finalize-") as tmp:
            assert tmp.startswith(str(work / "atelier-finalize-"))
            (work / tmp / "images.zip").write_bytes(b"PK")
        assert list(work.iterdir()) == []
        monkeypatch.delenv("ATELIER_WORK_DIR")
        get_settings.cache_clear()
        with scratch_dir("atelier-import-") as tmp:
            assert not tmp.startswith(str(work))
    finally:
        get_settings.cache_clear()
