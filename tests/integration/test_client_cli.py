"""The `atelier` client commands against the real stack, run as a script runs them (a process each):
stdout is clean JSON (progress goes to stderr), errors are one line without a traceback, downloads
resume, and the exit code says what happened, from the one table of atelier.cli.exits."""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys

import httpx
import pytest

from atelier.catalogue.synthetic import catalogue_zip, make_catalogue
from atelier.cli import exits
from atelier.client import Client
from tests.integration.test_generation import model  # noqa: F401 - the tiny 16 px model fixture

pytestmark = [pytest.mark.integration, pytest.mark.one_backend("sqlite")]

CATS = ("dress", "hat", "pants")


def atelier(
    stack, *args: str, key: str | None = None, timeout: float = 180, cwd=None
) -> subprocess.CompletedProcess:  # noqa: ANN001
    env = {**os.environ, "ATELIER_API_URL": stack.api_url, "ATELIER_API_KEY": key or stack.admin_key}
    if key == "":
        env.pop("ATELIER_API_KEY")
    return subprocess.run(
        [sys.executable, "-m", "atelier.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def one_line_error(run: subprocess.CompletedProcess, *needles: str) -> None:
    assert run.stdout == "" and run.stderr.startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    for needle in needles:
        assert needle in run.stderr, run.stderr


@pytest.fixture(scope="module")
def catalogue(stack) -> None:
    with Client(stack.api_url, stack.admin_key) as client:
        upload = client.catalogue.upload(
            [("c.zip", catalogue_zip(make_catalogue(8, CATS, seed=random.randrange(1 << 30))))]
        )
        assert client.jobs.wait(upload.job.id, timeout=120).status == "succeeded"


@pytest.fixture(scope="module")
def broken_model(stack) -> str:
    """A registered model version whose checkpoint is not one: fine-tuning it fails in the worker."""
    from atelier.core.storage import get_store
    from atelier.training import registry

    return registry.register_checkpoint(
        get_store(), b"these bytes are not a checkpoint",
        arch="atelier", preset="tiny", resolution=16, class_names=list(CATS), steps=1,
    )  # fmt: skip


def test_generate_wait_prints_only_json_and_exits_0_then_download_resumes(stack, model, tmp_path):  # noqa: F811
    run = atelier(stack, "submit", "generate", "--model", model, "--count", "30", "--seed", "3", "--wait")
    assert run.returncode == exits.OK, run.stderr
    job = json.loads(run.stdout)  # `| jq .status` sees exactly this
    assert job["status"] == "succeeded" and job["progress"]["done"] == 30
    assert f"generate {job['id']}: succeeded 30/30" in run.stderr

    listed = json.loads(atelier(stack, "jobs", "list", "--kind", "generate", "--limit", "500").stdout)
    assert job["id"] in [j["id"] for j in listed] and all(j["kind"] == "generate" for j in listed)
    events = [json.loads(line) for line in atelier(stack, "jobs", "events", job["id"]).stdout.splitlines()]
    assert events[0]["kind"] == "created" and events[-1]["kind"] == "succeeded"
    shown = atelier(stack, "status", job["id"])
    assert shown.returncode == exits.OK and json.loads(shown.stdout)["id"] == job["id"]

    first = atelier(stack, "download", job["id"], str(tmp_path))
    assert first.returncode == exits.OK, first.stderr
    assert json.loads(first.stdout)["downloaded"] == 30
    # a half-written file is completed with a Range request and verified
    with Client(stack.api_url, stack.admin_key) as client:
        image = next(client.generation.images(job["id"]))
    path = tmp_path / image.filename
    whole = path.read_bytes()
    path.unlink()
    path.with_name(path.name + ".part").write_bytes(whole[: len(whole) // 2])
    again = json.loads(atelier(stack, "download", job["id"], str(tmp_path)).stdout)
    assert (again["downloaded"], again["skipped"], again["failed"]) == (1, 29, 0)
    assert again["bytes"] == len(whole) - len(whole) // 2, "only the missing half was fetched"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == image.sha256


def test_errors_are_one_line_and_their_exit_codes_say_whose_fault(stack, model, tmp_path):  # noqa: F811
    missing = atelier(stack, "jobs", "cancel", "no-such-job")
    assert missing.returncode == exits.API_REFUSED
    one_line_error(missing, "404", "no-such-job")
    invalid = atelier(stack, "submit", "generate", "--model", model, "--count", "0")
    assert invalid.returncode == exits.API_REFUSED
    one_line_error(invalid, "422", "count")

    usage = atelier(stack, "submit", "generate", "--model", model)
    assert usage.returncode == exits.USAGE and "give --per-category or --count" in usage.stderr
    no_key = atelier(stack, "status", "x", key="", cwd=tmp_path)
    assert no_key.returncode == exits.USAGE and "ATELIER_API_KEY" in no_key.stderr

    from atelier.cli.stack import free_port

    table = atelier(stack, "--help")  # the table every command follows
    assert "Exit codes" in table.stdout and "130" in table.stdout
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = atelier(stack, "status", "x", "--api", closed, timeout=60)
    assert unreachable.returncode == exits.API_UNAVAILABLE
    one_line_error(unreachable, "cannot reach the API")
    version = atelier(stack, "--version")
    assert version.returncode == 0 and version.stdout.startswith("atelier, version ")


def test_submit_train_refuses_devices_that_cannot_share_the_batch(stack, catalogue):
    run = atelier(stack, "submit", "train", "--preset", "tiny", "--devices", "3")
    assert run.returncode == exits.API_REFUSED
    one_line_error(run, "devices", "does not divide the tiny preset's batch of 32")


def test_a_failed_training_job_exits_1_from_wait_and_watch(stack, catalogue, broken_model):
    run = atelier(
        stack, "submit", "train", "--preset", "tiny", "--resolution", "16", "--steps", "5",
        "--categories", ",".join(CATS), "--base-model", broken_model, "--wait",
    )  # fmt: skip
    assert run.returncode == exits.JOB_FAILED, run.stderr
    job = json.loads(run.stdout)
    assert job["status"] == "failed" and job["error"]
    watched = atelier(stack, "status", job["id"], "--watch")
    assert watched.returncode == exits.JOB_FAILED and json.loads(watched.stdout)["status"] == "failed"


def _deliver_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_timeout_interrupt_and_cancel_have_their_own_codes(stack, catalogue):
    submitted = atelier(
        stack, "submit", "train", "--preset", "tiny", "--resolution", "16", "--steps", "100000",
        "--categories", ",".join(CATS), "--promote", "never",
    )  # fmt: skip
    assert submitted.returncode == exits.OK, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    try:
        waited = atelier(stack, "status", job_id, "--watch", "--timeout", "2")
        assert waited.returncode == exits.WAIT_TIMEOUT, waited.stderr
        assert json.loads(waited.stdout)["status"] in ("queued", "running")
        assert "still" in waited.stderr and "Traceback" not in waited.stderr

        env = {**os.environ, "ATELIER_API_URL": stack.api_url, "ATELIER_API_KEY": stack.admin_key}
        watcher = subprocess.Popen(
            [sys.executable, "-m", "atelier.cli.main", "status", job_id, "--watch"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # As from a terminal: SIGINT neither ignored nor blocked. Both are inherited across exec, and
            # with either Python never sees Ctrl-C (in a full `make test` the watcher ignored it).
            preexec_fn=_deliver_sigint,
        )  # fmt: skip
        ready, _, _ = select.select([watcher.stderr], [], [], 120)
        first = watcher.stderr.readline() if ready else ""  # its first progress line: it follows the job
        assert job_id in first, first
        watcher.send_signal(signal.SIGINT)
        try:
            _, err = watcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            watcher.kill()
            _, err = watcher.communicate()
            here = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
            raise AssertionError(
                f"status --watch still ran 60 s after SIGINT; it printed: {err}; in the test process "
                f"SIGINT is {here[0]}, blocked signals {here[1]}"
            ) from None
        assert watcher.returncode == exits.INTERRUPTED and "Aborted." in err and "Traceback" not in err
    finally:
        cancelled = atelier(stack, "jobs", "cancel", job_id)
    assert cancelled.returncode == exits.OK and json.loads(cancelled.stdout)["cancel_requested"] is True
    watched = atelier(stack, "status", job_id, "--watch")
    assert watched.returncode == exits.JOB_CANCELLED, watched.stderr
    assert json.loads(watched.stdout)["status"] == "cancelled"


def test_status_of_a_partially_succeeded_job_exits_6(stack):
    from atelier.core import jobs, units
    from atelier.core.db import session_scope

    with session_scope() as session:  # an outcome that needs failed chunks: set it where the workers would
        job = jobs.create_job(session=session, kind="generate", params={"count": 10}, total=10)
        jobs.transition(session=session, job=job, to=jobs.RUNNING)
        units.end_job(session=session, job=job, to=jobs.PARTIALLY_SUCCEEDED, error="3 of 10 images missing")
        job_id = job.id
    for args in (("status", job_id), ("status", job_id, "--watch")):
        run = atelier(stack, *args)
        assert run.returncode == exits.JOB_PARTIAL, run.stderr
        assert json.loads(run.stdout)["status"] == "partially_succeeded"


def test_keys_create_prints_the_key_and_its_webhook_secret_once(stack):
    over_http = atelier(
        stack, "keys", "create", "--name", "cli-http", "--scopes", "read", "--api", stack.api_url
    )
    assert over_http.returncode == 0, over_http.stderr
    secret = over_http.stdout.strip()  # `KEY=$(atelier keys create ...)` captures the key alone
    assert secret and "\n" not in secret and "whsec_" in over_http.stderr
    r = httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    assert r.status_code == 200

    env_db = {"ATELIER_DATABASE_URL": stack.env["ATELIER_DATABASE_URL"]}
    argv = ["keys", "create", "--name", "cli-db", "--scopes", "submit", "--json"]
    on_db = subprocess.run(
        [sys.executable, "-m", "atelier.cli.main", *argv],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env_db},
    )  # fmt: skip
    assert on_db.returncode == 0, on_db.stderr
    created = json.loads(on_db.stdout)
    assert (
        created["secret"]
        and created["webhook_secret"].startswith("whsec_")
        and created["scopes"] == ["submit"]
    )
