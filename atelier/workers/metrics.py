"""Worker observability, hooked to Celery signals: Prometheus metrics and the log context.

    celery worker (main process)              pool processes (prefork children)
      worker_init: empty the metrics dir        task_prerun:  bind job_id/unit/worker to the logs,
      celeryd_after_setup: remember name          start the clock
      worker_ready: serve /metrics on           task_postrun: latency and outcome, GPU memory
        ATELIER_WORKER_METRICS_PORT,            task_retry:   count it
        the sum over every child (behind        worker_process_shutdown: drop the child's files
        ATELIER_METRICS_TOKEN when set)         record_device: the device a task picked (device.py)

A prefork worker runs tasks in child processes, so the series use prometheus-client's multiprocess
mode: each child writes its values to files under PROMETHEUS_MULTIPROC_DIR and the main process
serves their sum. The directory must be chosen before prometheus_client is imported, which is why
this module sets it at import time (atelier/workers/celery_app.py imports it first thing). With the port at
0 (the default) nothing is served and the series stay in process. Beat and the workers configure
logging through the `setup_logging` signal, so Celery never installs handlers of its own.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from atelier.core.config import get_settings

_PORT = get_settings().worker_metrics_port
if _PORT and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    # One directory per port (so per worker on a host), emptied when that worker starts; a fixed name,
    # so that short-lived imports of the app (`celery inspect ping` health checks) leave nothing behind.
    _DIR = Path(tempfile.gettempdir()) / f"atelier-worker-metrics-{_PORT}"
    _DIR.mkdir(exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_DIR)

from celery.signals import (  # noqa: E402 - after the multiprocess directory is set
    celeryd_after_setup,
    setup_logging,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402

from atelier.core.logging import bind, configure_logging, unbind  # noqa: E402

log = logging.getLogger("atelier.worker")

TASK_SECONDS = Histogram(
    "atelier_worker_task_duration_seconds",
    "Task run time on a worker, by task name",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
TASKS = Counter(
    "atelier_worker_tasks", "Tasks finished on a worker, by task and Celery state", ["task", "state"]
)
TASK_RETRIES = Counter("atelier_worker_task_retries", "Celery task retries, by task", ["task"])
GPU_MEMORY = Gauge(
    "atelier_worker_gpu_memory_bytes",
    "CUDA memory of the worker's GPU after its last task (allocated, reserved, peak)",
    ["device", "kind"],
    multiprocess_mode="livemax",
)
DEVICE_INFO = Gauge(
    "atelier_worker_device_info",
    "1 for the device this worker's GAN tasks run on; reason says why a CUDA build runs on the CPU",
    ["device", "reason"],
    multiprocess_mode="livemax",
)

_worker_name = os.environ.get("HOSTNAME", "")
_started: dict[str, tuple[float, dict]] = {}


def worker_registry() -> CollectorRegistry:
    """What the worker's endpoint serves: the sum over its pool processes when multiprocess."""
    from prometheus_client import REGISTRY, multiprocess

    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


@setup_logging.connect
def _logging(**_kwargs) -> None:
    configure_logging(os.environ.get("ATELIER_PROCESS") or ("beat" if "beat" in sys.argv else "worker"))


@celeryd_after_setup.connect
def _remember_name(sender, **_kwargs) -> None:  # noqa: ANN001
    global _worker_name
    _worker_name = str(sender)


@worker_init.connect
def _fresh_metrics(**_kwargs) -> None:
    # before the pool forks: files left by a previous run of this worker would be summed in again
    if _PORT and "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
            stale.unlink(missing_ok=True)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args) -> None:  # noqa: ANN002 - a scrape every 15 s is not news
        pass


def metrics_app(registry: CollectorRegistry, token: str | None):  # noqa: ANN201
    """prometheus-client's WSGI app, behind `Authorization: Bearer <token>` when a token is set."""
    from prometheus_client import make_wsgi_app

    inner = make_wsgi_app(registry)
    expected = f"Bearer {token}".encode()

    def app(environ, start_response):  # noqa: ANN001, ANN202
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if token and not hmac.compare_digest(given, expected):
            start_response(
                "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")]
            )
            return [b"GET /metrics needs Authorization: Bearer <ATELIER_METRICS_TOKEN>\n"]
        return inner(environ, start_response)

    return app


def serve_metrics(port: int, token: str | None, host: str = "0.0.0.0") -> WSGIServer:  # noqa: S104
    server = make_server(
        host, port, metrics_app(worker_registry(), token), _ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


@worker_ready.connect
def _serve_metrics(**_kwargs) -> None:
    if not _PORT:
        return
    token = get_settings().metrics_token
    serve_metrics(_PORT, token)
    log.info("worker metrics on port %s%s", _PORT, " (token required)" if token else "")


def _unit(task, args, kwargs) -> tuple[str | None, str]:  # noqa: ANN001
    """(job_id, unit) of a task call: tasks take the job id first, a chunk index second."""
    args = list(args or ())
    kwargs = kwargs or {}
    job_id = kwargs.get("job_id") or (args[0] if args and isinstance(args[0], str) else None)
    short = task.name.removeprefix("atelier.") if task is not None else "task"
    index = kwargs.get("chunk_index", args[1] if len(args) > 1 and isinstance(args[1], int) else None)
    return job_id, short if index is None else f"{short}[{index}]"


@task_prerun.connect
def _task_started(task_id, task=None, args=None, kwargs=None, **_kw) -> None:  # noqa: ANN001
    job_id, unit = _unit(task, args, kwargs)
    _started[task_id] = (time.perf_counter(), bind(job_id=job_id, unit=unit, worker=_worker_name))


@task_postrun.connect
def _task_finished(task_id, task=None, state=None, **_kw) -> None:  # noqa: ANN001
    started = _started.pop(task_id, None)
    name = getattr(task, "name", "unknown")
    if started is not None:
        TASK_SECONDS.labels(name).observe(time.perf_counter() - started[0])
        unbind(started[1])
    TASKS.labels(name, state or "UNKNOWN").inc()
    record_gpu_memory()


@task_retry.connect
def _task_retried(sender=None, **_kw) -> None:  # noqa: ANN001
    TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


@worker_process_shutdown.connect
def _child_gone(pid=None, **_kw) -> None:  # noqa: ANN001
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid or os.getpid())


def record_device(device: str, reason: str) -> None:
    DEVICE_INFO.labels(device, reason).set(1)


def record_gpu_memory() -> None:
    """Only where a task already loaded torch and used CUDA: a CPU worker never imports torch for this."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    for i in range(torch.cuda.device_count()):
        device = str(i)
        GPU_MEMORY.labels(device, "allocated").set(torch.cuda.memory_allocated(i))
        GPU_MEMORY.labels(device, "reserved").set(torch.cuda.memory_reserved(i))
        GPU_MEMORY.labels(device, "peak").set(torch.cuda.max_memory_allocated(i))
