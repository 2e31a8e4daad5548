"""`atelier bench api --json`: the status-polling path under load, on an embedded stack in a temp dir.

    batch        one bulk generation job (default 10,000 images) keeps the workers, S3 and SQL busy
    pollers      N clients (default 200), each polling GET /v1/jobs/{id} once a second for D seconds
                 (one request at a time, as a dashboard does: a late answer skips the missed seconds);
                 latency p50/p99/max and the answers counted by status
    closed_loop  M clients (default 32) each sending the next request as soon as the last one
                 answered, for a few seconds: the requests/s ceiling of the read path

Latencies are measured by the client, on the same machine: the client's own CPU is part of what is
measured, as it would be for a dashboard running next to the API.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

import click

REQUEST_TIMEOUT = 60.0  # a poll not answered within this counts as "timeout"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


class Tally:
    """Latencies of answered requests and a count of every outcome (HTTP status or error name)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.outcomes: dict[str, int] = {}

    def add(self, outcome: str, seconds: float) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.latencies.append(seconds)

    def summary(self) -> dict:
        errors = {k: v for k, v in self.outcomes.items() if k not in ("200", "304")}
        return {
            "requests": len(self.latencies),
            "p50_ms": _ms(_percentile(self.latencies, 0.50)),
            "p99_ms": _ms(_percentile(self.latencies, 0.99)),
            "max_ms": _ms(max(self.latencies, default=None)),
            "answers": dict(sorted(self.outcomes.items())),
            "errors": sum(errors.values()),
            "errors_by_status": dict(sorted(errors.items())),
        }


async def _request(http, path: str, tally: Tally, etag: dict | None) -> None:  # noqa: ANN001
    import httpx

    headers = {"If-None-Match": etag["value"]} if etag and etag.get("value") else None
    t0 = time.perf_counter()
    try:
        response = await http.get(path, headers=headers)
        outcome = str(response.status_code)
        if etag is not None and response.status_code == 200:
            etag["value"] = response.headers.get("etag")
    except httpx.TimeoutException:
        outcome = "timeout"
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    tally.add(outcome, time.perf_counter() - t0)


async def poll_each_second(
    base_url: str, key: str, path: str, *, clients: int, seconds: float, conditional: bool
) -> dict:
    """`clients` pollers at random phases, each polling once a second for `seconds` as a dashboard
    does: one request at a time, the next one on the next whole second after the answer."""
    import httpx

    tally = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT, limits=limits
    ) as http:
        start = time.perf_counter() + 0.5
        end = start + seconds

        async def poller() -> None:
            etag: dict | None = {} if conditional else None
            tick = start + random.random()
            while tick < end:
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))
                await _request(http, path, tally, etag)
                while tick <= time.perf_counter():  # a late answer: the missed seconds are skipped
                    tick += 1.0

        await asyncio.gather(*(poller() for _ in range(clients)))
    return {"clients": clients, "seconds": seconds, "conditional": conditional, **tally.summary()}


async def poll_closed_loop(base_url: str, key: str, path: str, *, clients: int, seconds: float) -> dict:
    import httpx

    tally = Tally()
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT
    ) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                await _request(http, path, tally, None)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        dt = time.perf_counter() - t0
    summary = tally.summary()
    ok = sum(v for k, v in tally.outcomes.items() if k == "200")
    return {"clients": clients, "seconds": round(dt, 2), "requests_per_s": round(ok / dt, 1), **summary}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(run, api_pid: int) -> dict:  # noqa: ANN001
    """Run one phase; add the API process's and this client's CPU per request: what a request costs
    on a free core, whatever the machine's load did to the latencies."""
    api0, client0 = _cpu_seconds(api_pid), time.process_time()
    result = asyncio.run(run)
    n = max(1, result["requests"])
    result["api_cpu_ms_per_request"] = round((_cpu_seconds(api_pid) - api0) * 1000 / n, 3)
    result["client_cpu_ms_per_request"] = round((time.process_time() - client0) * 1000 / n, 3)
    return result


def register_model(stack, *, preset: str = "tiny", resolution: int = 64) -> str:  # noqa: ANN001
    """A freshly initialised generator (throughput does not depend on the weights), registered in the
    stack's database and store (this process's settings are left alone)."""
    from cli.bench_system import _model
    from core import registry
    from core.db import session_scope
    from core.storage import ObjectStore

    ckpt, cfg = _model(preset, resolution, classes=4)
    with session_scope(stack.env["ATELIER_DATABASE_URL"]) as session:
        version = registry.create_version(
            session=session, arch=cfg.arch, preset=preset, resolution=resolution,
            class_names=[f"class{i}" for i in range(4)], checkpoint_key="pending",
        )  # fmt: skip
        version.checkpoint_key = registry.checkpoint_key(version.id)
        ObjectStore(stack.settings).put(version.checkpoint_key, ckpt)
        return version.id


def bench_api(
    *, pollers: int, seconds: float, batch: int, closed_clients: int, closed_seconds: float, conditional: bool
) -> dict:
    from cli.client import Client
    from cli.stack import Stack

    out: dict = {"benchmark": "api", "cpu_count": os.cpu_count(), "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="atelier-bench-api-") as tmp, Stack(Path(tmp)) as stack:
        version_id = register_model(stack)
        client = Client(stack.api_url, stack.admin_key)
        job = client.post("/v1/generation-jobs", json={"model": version_id, "count": batch, "seed": 0})
        path = f"/v1/jobs/{job['id']}"
        click.echo(f"stack up, batch {job['id']} submitted; polling", err=True)
        time.sleep(2.0)  # let the batch start: the pollers run while the workers generate
        api_pid = stack.children["api"].proc.pid
        out["pollers"] = _measured(
            poll_each_second(stack.api_url, stack.admin_key, path, clients=pollers, seconds=seconds,
                             conditional=conditional),
            api_pid,
        )  # fmt: skip
        click.echo(f"pollers: {json.dumps(out['pollers'])}", err=True)
        out["closed_loop"] = _measured(
            poll_closed_loop(
                stack.api_url, stack.admin_key, path, clients=closed_clients, seconds=closed_seconds
            ),
            api_pid,
        )
        final = client.job(job["id"])
        out["batch"] = {
            "count": batch,
            "status_after": final["status"],
            "done_after": final["progress"]["done"],
        }
        client.post(f"{path}/cancel")
        client.close()
    out["loadavg_after"] = os.getloadavg()
    return out


@click.command("api")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (the only output format)")
@click.option("--pollers", type=int, default=200, show_default=True, help="clients polling once a second")
@click.option("--seconds", type=float, default=30.0, show_default=True, help="how long the pollers run")
@click.option("--batch", type=int, default=10_000, show_default=True, help="images in the bulk batch")
@click.option("--closed-clients", type=int, default=32, show_default=True)
@click.option("--closed-seconds", type=float, default=10.0, show_default=True)
@click.option("--conditional", is_flag=True, help="pollers send If-None-Match with the last ETag")
def bench_api_cmd(
    as_json: bool, pollers: int, seconds: float, batch: int, closed_clients: int, closed_seconds: float,
    conditional: bool,
) -> None:  # fmt: skip
    """Status polling under load: N pollers at 1/s during a bulk batch, and the closed-loop ceiling."""
    result = bench_api(
        pollers=pollers, seconds=seconds, batch=batch, closed_clients=closed_clients,
        closed_seconds=closed_seconds, conditional=conditional,
    )  # fmt: skip
    click.echo(json.dumps(result))
