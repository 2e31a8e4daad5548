"""`atelier submit generate` and `atelier download`: thin clients of the generation API.

atelier submit generate --per-category dress=500,skirt=200 --seed 7 --format webp --size 64 --wait
atelier download JOB DIR      pages through /images, downloads in parallel, verifies sha256, and
                              skips files already there with the right hash (so it resumes)
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import httpx

from atelier.cli.client import _sha256_of
from atelier.cli.options import api_option, key_option
from atelier.cli.options import make_client as _client


def parse_per_category(value: str | None) -> dict[str, int] | None:
    if not value:
        return None
    out: dict[str, int] = {}
    for part in value.split(","):
        name, sep, n = part.partition("=")
        if not sep or not name.strip() or not n.strip().isdigit():
            raise click.BadParameter(
                f"{part!r}: expected category=count, e.g. dress=500", param_hint="--per-category"
            )
        out[name.strip()] = int(n)
    return out


@click.command("generate")
@click.option("--per-category", default=None, help="category=count pairs, e.g. dress=500,skirt=200")
@click.option("--count", type=int, default=None, help="images spread evenly over the model's categories")
@click.option("--model", default="production", show_default=True, help="`production` or a version id")
@click.option("--seed", type=int, default=None, help="image i gets seed + i (random when omitted)")
@click.option("--format", "fmt", type=click.Choice(["png", "webp", "jpeg"]), default="png", show_default=True)
@click.option("--size", type=int, default=None, help="pixels (default the model's resolution)")
@click.option("--quality", type=int, default=None, help="webp/jpeg quality")
@click.option("--truncation", type=float, default=None)
@click.option("--postprocess", default=None, help="comma-separated: upscale,background")
@click.option("--recolor", default=None, help="recolour to this colour (#rrggbb)")
@click.option("--priority", type=click.Choice(["interactive", "bulk"]), default=None)
@click.option("--archive", is_flag=True, help="also build one ZIP of every image")
@click.option("--webhook-url", default=None)
@click.option("--idempotency-key", default=None)
@click.option("--wait", is_flag=True, help="show a live progress line until the job ends")
@api_option
@key_option
def generate(
    per_category, count, model, seed, fmt, size, quality, truncation, postprocess, recolor, priority, archive,
    webhook_url, idempotency_key, wait, api_url, key_file,
) -> None:  # fmt: skip
    """Submit a generation job (and with --wait, follow it)."""
    body: dict[str, Any] = {"model": model, "format": fmt}
    cats = parse_per_category(per_category)
    if cats is None and count is None:
        raise click.UsageError("give --per-category or --count")
    for name, value in [("per_category", cats), ("count", count), ("seed", seed), ("size", size),
                        ("quality", quality), ("truncation", truncation), ("priority", priority),
                        ("webhook_url", webhook_url)]:  # fmt: skip
        if value is not None:
            body[name] = value
    ops: list[Any] = [p.strip() for p in (postprocess or "").split(",") if p.strip()]
    if recolor:
        ops.append({"op": "recolor", "color": recolor})
    if ops:
        body["postprocess"] = ops
    if archive:
        body["archive"] = True
    from atelier.cli.progress import JobProgress

    client = _client(api_url, key_file)
    job = client.submit_generation(body, idempotency_key=idempotency_key)
    if not wait:
        click.echo(json.dumps(job, indent=2))
        return
    click.echo(f"job {job['id']}: {job['progress']['total']} images on {job['priority']}", err=True)
    with JobProgress("generate") as bar:  # on stderr: `--wait | jq .status` sees only the JSON
        job = client.wait(job["id"], timeout=7 * 24 * 3600, interval=1.0, on_update=bar.update)
    click.echo(json.dumps(job, indent=2))
    if job["status"] not in ("succeeded", "partially_succeeded"):
        sys.exit(1)


def download_job(
    client, job_id: str, directory: Path, *, workers: int = 8, category: str | None = None
) -> dict:  # noqa: ANN001
    """Download every image of a job into `directory` as <index>.<ext>, page by page; files already
    there with the right sha256 are skipped and partial ones resumed, so a rerun continues."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = {"downloaded": 0, "skipped": 0, "failed": 0, "bytes": 0}
    http = httpx.Client(timeout=120)

    def fetch(item: dict) -> tuple[str, int]:
        path = directory / item["key"].rsplit("/", 1)[-1]
        if _sha256_of(path) == item["sha256"]:
            return "skipped", 0
        for _attempt in range(3):
            try:
                return "downloaded", client.download_file(item["url"], path, sha256=item["sha256"], http=http)
            except (ValueError, httpx.TransportError):
                continue
        return "failed", 0

    with ThreadPoolExecutor(workers) as pool:
        batch: list[dict] = []
        for item in client.images(job_id, category=category):
            batch.append(item)
            if len(batch) == 500:  # presigned URLs expire: fetch each page soon after listing it
                _tally(counts, pool.map(fetch, batch))
                batch = []
        _tally(counts, pool.map(fetch, batch))
    http.close()
    return counts


def _tally(counts: dict, outcomes) -> None:  # noqa: ANN001
    for outcome, size in outcomes:
        counts[outcome] += 1
        counts["bytes"] += size


@click.command("download")
@click.argument("job_id")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=int, default=8, show_default=True, help="parallel downloads")
@click.option("--category", default=None)
@api_option
@key_option
def download(
    job_id: str, directory: Path, workers: int, category: str | None, api_url: str, key_file
) -> None:  # noqa: ANN001
    """Download a generation job's images into DIRECTORY (resumable; verifies sha256)."""
    client = _client(api_url, key_file)
    t0 = time.monotonic()
    counts = download_job(client, job_id, directory, workers=workers, category=category)
    counts["seconds"] = round(time.monotonic() - t0, 2)
    click.echo(json.dumps(counts))
    if counts["failed"]:
        sys.exit(1)


def demo_generate(client, model_id: str, per_category: int = 20, timeout: float = 600) -> dict:  # noqa: ANN001
    """For the demo: a small batch of every category of the model, waited for; returns the job."""
    version = client.get(f"/v1/models/{model_id}")
    cats = {name: per_category for name in version.get("class_names") or []}
    body: dict[str, Any] = {"model": model_id, "seed": 7, "archive": True}
    body.update({"per_category": cats} if cats else {"count": per_category})
    job = client.post("/v1/generation-jobs", json=body)
    return client.wait(job["id"], timeout=timeout)
