"""The consumer watchdog in a real Celery worker on a real redis-server: a worker whose event loop stops
turning stops itself (exit 70) for its supervisor to replace, and a worker whose loop turns does not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atelier.cli.stack import free_port, redis_server_binary
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

# A control command runs on the worker's event loop (not in a pool process), so one that sleeps
# holds the loop still: the state a lost consumer leaves the worker in, made on purpose.
BLOCKING_APP = textwrap.dedent(
    """
    import time

    from celery.worker.control import control_command

    from atelier.workers.celery_app import app  # noqa: F401


    @control_command(args=[("seconds", float)])
    def hold_event_loop(state, seconds=30.0):
        time.sleep(seconds)
    """
)
STUCK_SECONDS = 3


@pytest.fixture
def worker(tmp_path: Path):  # noqa: ANN201
    port = free_port()
    redis = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    (tmp_path / "blocking_app.py").write_text(BLOCKING_APP)
    env = {
        **os.environ,
        "ATELIER_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "ATELIER_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
        "ATELIER_CONSUMER_STUCK_SECONDS": str(STUCK_SECONDS),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])]),
    }
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "blocking_app", "worker", "-Q", "control", "-c", "1",
             "-n", f"watchdog-{port}@%h", "-l", "INFO", "--without-gossip", "--without-mingle"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is not None or " ready." in log.read_text(), what="the worker to start")
        assert proc.poll() is None, log.read_text()[-2000:]
        yield proc, log, env
    finally:
        proc.kill()
        proc.wait(timeout=10)
        redis.kill()
        redis.wait(timeout=10)


def test_a_worker_whose_event_loop_stops_stops_itself_and_a_turning_one_does_not(worker):
    proc, log, env = worker
    # a healthy worker, checked every second for several stuck times, stays up
    time.sleep(STUCK_SECONDS * 3)
    assert proc.poll() is None, log.read_text()[-2000:]

    subprocess.run(
        [sys.executable, "-c", "from blocking_app import app; app.control.broadcast('hold_event_loop', "
         "arguments={'seconds': 120}, reply=False)"],
        env=env, cwd=Path(env["PYTHONPATH"].split(os.pathsep)[0]), check=True, timeout=60,
    )  # fmt: skip
    t0 = time.monotonic()
    # the verdict comes within the stuck time and one check; the warm shutdown hangs with the loop,
    # so the process ends itself after its grace time: well before the 120 s hold ends
    assert proc.wait(timeout=60) == 70
    assert time.monotonic() - t0 < 30
    text = log.read_text()
    assert f"for {STUCK_SECONDS} s its event loop has not turned (queues control)" in text, text[-2000:]
