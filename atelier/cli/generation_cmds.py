"""`atelier submit generate` and `atelier download`: thin clients of the generation API (atelier.client).

atelier submit generate --per-category dress=500,skirt=200 --seed 7 --format webp --size 64 --wait
atelier download JOB DIR      pages through /images, downloads in parallel, verifies sha256, and
                              skips files already there with the right hash (so it resumes)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from atelier.cli import exits
from atelier.cli.options import api_option, echo_json, exit_with_job, key_option, wait_timeout_option
from atelier.cli.options import make_client as _client
from atelier.client import Client, GenerationRequest, Job, Recolor


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
@click.option("--model", default=None, help="`production` (the default) or a version id")
@click.option("--seed", type=int, default=None, help="image i gets seed + i (random when omitted)")
@click.option("--format", "fmt", type=click.Choice(["png", "webp", "jpeg"]), default="png", show_default=True)
@click.option("--size", type=int, default=None, help="pixels (default the model's resolution)")
@click.option("--quality", type=int, default=None, help="webp/jpeg quality")
@click.option("--truncation", type=float, default=None)
@click.option("--postprocess", default=None, help="comma-separated: upscale,background,tryon")
@click.option("--recolor", default=None, help="recolour to this colour (#rrggbb)")
@click.option(
    "--mode", type=click.Choice(["sample", "variations", "interpolate"]), default=None, help="default sample"
)
@click.option(
    "--image-id",
    "image_ids",
    multiple=True,
    help="'<job id>:<index>': one for variations, two to interpolate",
)
@click.option("--strength", type=float, default=None, help="variations: how far from the source")
@click.option("--priority", type=click.Choice(["interactive", "bulk"]), default=None)
@click.option("--archive", is_flag=True, help="also build one ZIP of every image")
@click.option("--webhook-url", default=None, help="POSTed a signed job event when the job ends")
@click.option("--idempotency-key", default=None, help="a repeat with the same key returns the same job")
@click.option(
    "--wait", is_flag=True, help="show a live progress line until the job ends; exit with its outcome"
)
@wait_timeout_option
@api_option
@key_option
def generate(
    per_category, count, model, seed, fmt, size, quality, truncation, postprocess, recolor, mode, image_ids,
    strength, priority, archive, webhook_url, idempotency_key, wait, wait_timeout, api_url, key_file,
) -> None:  # fmt: skip
    """Submit a generation job (and with --wait, follow it: exit 0 succeeded, 1 failed, 5 cancelled,
    6 partially succeeded)."""
    cats = parse_per_category(per_category)
    if cats is None and count is None and mode in (None, "sample"):
        raise click.UsageError("give --per-category or --count")
    ops: list[Any] = [p.strip() for p in (postprocess or "").split(",") if p.strip()]
    if recolor:
        ops.append(Recolor(color=recolor))
    request = GenerationRequest(
        model=model,
        per_category=cats,
        count=count,
        seed=seed,
        format=fmt,
        size=size,
        quality=quality,
        truncation=truncation,
        postprocess=ops or None,
        mode=mode,
        image_id=image_ids[0] if mode == "variations" and image_ids else None,
        image_ids=list(image_ids) if mode == "interpolate" else None,
        strength=strength,
        priority=priority,
        webhook_url=webhook_url,
        archive=archive or None,
    )
    from atelier.cli.progress import JobProgress

    client = _client(api_url, key_file)
    job = client.generation.submit(request, idempotency_key=idempotency_key)
    if not wait:
        echo_json(job)
        return
    click.echo(f"job {job.id}: {job.progress.total} images on {job.priority}", err=True)
    with JobProgress("generate") as bar:  # on stderr: `--wait | jq .status` sees only the JSON
        job = client.jobs.wait(job.id, timeout=wait_timeout, interval=1.0, on_update=bar.update)
    exit_with_job(job)


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
    """Download a generation job's images into DIRECTORY (resumable; verifies sha256). Exits 1 when a
    file could not be downloaded."""
    client = _client(api_url, key_file)
    t0 = time.monotonic()
    report = client.generation.download(job_id, directory, workers=workers, category=category)
    counts = report.model_dump(exclude={"failures"})
    counts["seconds"] = round(time.monotonic() - t0, 2)
    for reason in report.failures:
        click.echo(f"failed {reason}", err=True)
    click.echo(json.dumps(counts))
    if report.failed:
        sys.exit(exits.JOB_FAILED)


def demo_generate(client: Client, model_id: str, per_category: int = 20, timeout: float = 600) -> Job:
    """For the demo: a small batch of every category of the model, waited for; returns the job."""
    version = client.models.get(model_id)
    cats = {name: per_category for name in version.class_names}
    request = GenerationRequest(model=model_id, seed=7, archive=True)
    request = request.model_copy(update={"per_category": cats} if cats else {"count": per_category})
    job = client.generation.submit(request)
    return client.jobs.wait(job.id, timeout=timeout)
