"""`atelier worker --role gpu|io|control`: a worker host that joins a control plane on another host.

    WorkerHost(role, data_dir)
      ├─ worker-gpu-0 .. worker-gpu-N-1   (--role gpu: one Celery worker per GPU, CUDA_VISIBLE_DEVICES=i)
      ├─ worker-io                        (--role io: ingest, finalize, webhooks)
      └─ worker-control + beat            (--role control: reconciler, dispatch, schedules)

It starts no broker, database or S3: the ATELIER_BROKER_URL, ATELIER_DATABASE_URL and ATELIER_S3_*
settings name those of the control host (`atelier up --listen ADDR` prints them). Each child runs in
its own process group and dies with this process; one that exits is started again after a capped
back-off, as a compose restart policy would. Nothing is kept on the host between tasks: the work is
in SQL and S3, so a host may be added or lost at any time (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from atelier.cli.stack import (
    ROLE_QUEUES,
    Child,
    _kill_group,
    _start_child,
    celery_beat_argv,
    celery_worker_argv,
)

# a child that keeps dying is started again after 0.5 s, 1 s, 2 s ... at most this long
MAX_BACKOFF_SECONDS = 30.0


@dataclass
class WorkerHost:
    role: str
    data_dir: Path
    gpus: int = 1
    concurrency: int | None = None
    with_beat: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLE_QUEUES:
            raise ValueError(f"role must be one of {', '.join(ROLE_QUEUES)}, not {self.role!r}")
        self.data_dir = Path(self.data_dir).resolve()
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)

    def specs(self) -> list[tuple[str, list[str], dict[str, str]]]:
        host = socket.gethostname()
        if self.role == "gpu":
            # one worker per GPU, each seeing only its own device; concurrency 1: a chunk owns the GPU
            return [
                (
                    f"worker-gpu-{i}",
                    celery_worker_argv("gpu", f"gpu{i}-{os.getpid()}@{host}", self.concurrency or 1),
                    {"CUDA_VISIBLE_DEVICES": str(i)} if self.gpus > 1 else {},
                )
                for i in range(self.gpus)
            ]
        if self.role == "io":
            return [
                ("worker-io", celery_worker_argv("io", f"io-{os.getpid()}@{host}", self.concurrency or 2), {})
            ]
        specs = [("worker-control", celery_worker_argv("control", f"control-{os.getpid()}@{host}", 1), {})]
        if self.with_beat:  # several beats are safe: runs are unique in SQL and reconcile is idempotent
            specs.append(("beat", celery_beat_argv(self.data_dir), {}))
        return specs

    def _spawn(self, child: Child, env: dict[str, str]) -> None:
        log = open(child.log, "ab")  # noqa: SIM115 - owned by the child process
        child.proc = subprocess.Popen(
            child.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                **self.extra_env,
                **env,
                "PYTHONUNBUFFERED": "1",
                "ATELIER_PROCESS": child.name,
            },
            cwd=str(self.data_dir),
            preexec_fn=functools.partial(_start_child, 0),
        )
        log.close()

    def start(self) -> None:
        self._env = {}
        for name, argv, env in self.specs():
            child = Child(name, argv, self.data_dir / "logs" / f"{name}.log")
            self._env[name] = env
            self._spawn(child, env)
            self.children[name] = child

    def supervise_once(self) -> list[str]:
        """Start again the children that exited, with a capped exponential back-off."""
        restarted, now = [], time.monotonic()
        for child in self.children.values():
            if child.proc is None or child.proc.poll() is None:
                continue
            if child.next_start == 0.0:
                child.next_start = now + min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(child.restarts, 6))
            if now >= child.next_start:
                _kill_group(child.proc)
                child.restarts += 1
                child.next_start = 0.0
                self._spawn(child, self._env[child.name])
                restarted.append(child.name)
        return restarted

    def stop(self, *, grace: float = 10.0) -> None:
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children.values():
            if child.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                _kill_group(child.proc)
        self.children.clear()


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a broker URL need not parse as a database URL
        return url.split("@")[-1]


@click.command("worker")
@click.option(
    "--role", type=click.Choice(list(ROLE_QUEUES)), required=True, help="which queues this host serves"
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".atelier-worker"),
    show_default=True,
    help="logs (and beat's schedule file); no work is kept here",
)
@click.option("--gpus", type=int, default=1, show_default=True, help="--role gpu: one worker per GPU")
@click.option("--concurrency", type=int, default=None, help="processes per worker (gpu 1, io 2)")
@click.option("--no-beat", is_flag=True, help="--role control: run no scheduler here (one runs elsewhere)")
def worker(role: str, data_dir: Path, gpus: int, concurrency: int | None, no_beat: bool) -> None:
    """Run only the workers of ROLE against the broker, database and S3 that ATELIER_BROKER_URL,
    ATELIER_DATABASE_URL and ATELIER_S3_* name (`atelier up --listen ADDR` prints them), restarting
    a worker that dies, until Ctrl-C or SIGTERM."""
    from atelier.core.config import get_settings

    missing = [name for name in ("ATELIER_BROKER_URL", "ATELIER_DATABASE_URL") if not os.environ.get(name)]
    if missing:
        raise click.UsageError(
            f"{' and '.join(missing)} must name the control host's services "
            "(`atelier up --listen ADDR` prints the lines to set)"
        )
    if gpus < 1:
        raise click.BadParameter("must be at least 1", param_hint="--gpus")
    settings = get_settings()
    host = WorkerHost(role, data_dir, gpus=gpus, concurrency=concurrency, with_beat=not no_beat)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    host.start()
    click.echo(f"Atelier {role} worker host {socket.gethostname()}: {', '.join(host.children)}")
    click.echo(f"  queues    {ROLE_QUEUES[role]}")
    click.echo(f"  broker    {_redacted(settings.broker_url)}")
    click.echo(f"  database  {_redacted(settings.database_url)}")
    click.echo(f"  S3        {settings.s3_endpoint_url}  bucket {settings.s3_bucket}")
    click.echo(f"  logs      {host.data_dir / 'logs'}/<process>.log (JSON lines)")
    try:
        while not stop.wait(1.0):
            for name in host.supervise_once():
                click.echo(f"  restarted {name} (exited unexpectedly)")
    finally:
        click.echo("Stopping ...")
        host.stop()
        click.echo("Stopped.")
