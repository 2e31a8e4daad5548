"""`atelier bench api --json`: the status-polling path under load, on an embedded stack in a temp dir.

    batch        one bulk generation job (default 10,000 images) keeps the workers, S3 and SQL busy
    pollers      N clients (default 200), each polling GET /v1/jobs/{id} once a second for D seconds
                 (one request at a time, as a dashboard does: a late answer skips the missed seconds);
                 latency p50/p99/max and the answers counted by status
    closed_loop  M clients (default 32) each sending the next request as soon as the last one
                 answered, for a few seconds: the requests/s ceiling of the read path

Latencies are measured by the client, on the same machine: the client's own CPU is part of what is
measured, as it would be for a dashboard running next to the API. Each phase also reports the API's
own view (`server`: p50/p99 from its latency histogram, as bucket upper bounds) and the CPU that the
API and the client spent per request, which tell a slow server from a starved client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

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


class Connection:
    """One poller's own keep-alive HTTP/1.1 connection, as each dashboard has its own: a few lines of
    asyncio streams instead of a shared client pool, so that the load generator's CPU (measured at
    ~9 ms per request with one pooled httpx client for 200 pollers) does not become the latency it
    measures."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, etag: str | None = None) -> tuple[int, str | None]:
        """(status, ETag) of one GET; opens the connection first where there is none."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        condition = f"If-None-Match: {etag}\r\n" if etag else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}{condition}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, fields.get("etag")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _request(conn: Connection, path: str, tally: Tally, etag: dict | None) -> None:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            status, tag = await conn.get(path, etag.get("value") if etag else None)
        outcome = str(status)
        if etag is not None and status == 200:
            etag["value"] = tag
    except TimeoutError:
        outcome = "timeout"
        await conn.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        outcome = type(exc).__name__
        await conn.close()
    tally.add(outcome, time.perf_counter() - t0)


def _address(base_url: str) -> tuple[str, int]:
    url = urlsplit(base_url)
    return url.hostname or "127.0.0.1", url.port or 80


async def poll_each_second(
    base_url: str, key: str, path: str, *, clients: int, seconds: float, conditional: bool
) -> dict:
    """`clients` pollers at random phases, each polling once a second for `seconds` as a dashboard
    does: one request at a time, the next one on the next whole second after the answer."""
    tally = Tally()
    host, port = _address(base_url)
    start = time.perf_counter() + 0.5
    end = start + seconds

    async def poller() -> None:
        conn = Connection(host, port, key)
        etag: dict | None = {} if conditional else None
        tick = start + random.random()
        try:
            while tick < end:
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))
                await _request(conn, path, tally, etag)
                while tick <= time.perf_counter():  # a late answer: the missed seconds are skipped
                    tick += 1.0
        finally:
            await conn.close()

    lags: list[float] = []
    monitor = asyncio.create_task(_loop_lag(lags))
    await asyncio.gather(*(poller() for _ in range(clients)))
    monitor.cancel()
    return {
        "clients": clients, "seconds": seconds, "conditional": conditional, **tally.summary(),
        "client_loop_lag_p99_ms": _ms(_percentile(lags, 0.99)),
    }  # fmt: skip


async def _loop_lag(lags: list[float], every: float = 0.01) -> None:
    """How late this client's own event loop wakes up: a late client inflates every latency it reports."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(every)
        lags.append(max(0.0, time.perf_counter() - t0 - every))


async def poll_closed_loop(base_url: str, key: str, path: str, *, clients: int, seconds: float) -> dict:
    tally = Tally()
    host, port = _address(base_url)
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        conn = Connection(host, port, key)
        try:
            while time.perf_counter() < deadline:
                await _request(conn, path, tally, None)
        finally:
            await conn.close()

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


SERVER_ROUTE = 'route="/v1/jobs/{job_id}"'


def server_buckets(base_url: str) -> dict[float, float]:
    """Cumulative counts of the API's own latency histogram for GET /v1/jobs/{job_id} (200 and 304),
    by bucket upper bound, from its /metrics."""
    import httpx

    # the stack's API inherits ATELIER_METRICS_TOKEN from this environment when it is set
    token = os.environ.get("ATELIER_METRICS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    counts: dict[float, float] = {}
    for line in httpx.get(f"{base_url}/metrics", headers=headers, timeout=10).text.splitlines():
        wanted = line.startswith("atelier_http_request_duration_seconds_bucket{") and SERVER_ROUTE in line
        if wanted and 'method="GET"' in line and ('status="200"' in line or 'status="304"' in line):
            labels, value = line.rsplit(" ", 1)
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            le = float("inf") if bound == "+Inf" else float(bound)
            counts[le] = counts.get(le, 0.0) + float(value)
    return counts


def server_quantiles(before: dict[float, float], after: dict[float, float]) -> dict:
    """p50/p99 of the requests between two snapshots, as the upper bound of the bucket they fall in:
    the time from the API's first middleware to its last byte, without the client or the network."""
    diff = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = diff[-1][1] if diff else 0.0

    def bound(q: float) -> float | None:
        for le, count in diff:
            if total and count >= q * total:
                return None if le == float("inf") else round(le * 1000, 1)
        return None

    return {"requests": int(total), "p50_ms_at_most": bound(0.5), "p99_ms_at_most": bound(0.99)}


def _measured(run, api_pid: int, base_url: str) -> dict:  # noqa: ANN001
    """Run one phase; add the API's own latency (its histogram) and the API process's and this
    client's CPU per request: what a request costs on a free core, whatever the load did."""
    api0, client0, buckets0 = _cpu_seconds(api_pid), time.process_time(), server_buckets(base_url)
    result = asyncio.run(run)
    n = max(1, result["requests"])
    result["api_cpu_ms_per_request"] = round((_cpu_seconds(api_pid) - api0) * 1000 / n, 3)
    result["client_cpu_ms_per_request"] = round((time.process_time() - client0) * 1000 / n, 3)
    result["server"] = server_quantiles(buckets0, server_buckets(base_url))
    return result


def register_model(stack, *, preset: str = "tiny", resolution: int = 64) -> str:  # noqa: ANN001
    """A freshly initialised generator (throughput does not depend on the weights), registered in the
    stack's database and store (this process's settings are left alone)."""
    from atelier.cli.bench.system import _model
    from atelier.core.storage import ObjectStore
    from atelier.training import registry

    ckpt, cfg = _model(preset, resolution, classes=4)
    return registry.register_checkpoint(
        ObjectStore(stack.settings), ckpt, database_url=stack.env["ATELIER_DATABASE_URL"], arch=cfg.arch,
        preset=preset, resolution=resolution, class_names=[f"class{i}" for i in range(4)],
    )  # fmt: skip


def bench_api(
    *, pollers: int, seconds: float, batch: int, closed_clients: int, closed_seconds: float, conditional: bool
) -> dict:
    from atelier.cli.stack import Stack
    from atelier.client import Client

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
            api_pid, stack.api_url,
        )  # fmt: skip
        click.echo(f"pollers: {json.dumps(out['pollers'])}", err=True)
        out["closed_loop"] = _measured(
            poll_closed_loop(
                stack.api_url, stack.admin_key, path, clients=closed_clients, seconds=closed_seconds
            ),
            api_pid,
            stack.api_url,
        )
        final = client.job(job["id"])
        out["batch"] = {
            "count": batch,
            "status_after": final["status"],
            "done_after": final["progress"]["done"],
        }
        if final["status"] in ("queued", "running"):
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
