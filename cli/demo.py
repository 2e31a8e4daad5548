"""`atelier demo`: the main job end to end on the embedded stack, with a catalogue it draws itself."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from cli.client import Client
from cli.stack import Stack
from core.synthetic import CATEGORIES, catalogue_zip, make_catalogue


def run_demo(data_dir: Path | None, per_category: int) -> int:
    data_dir = Path(data_dir or tempfile.mkdtemp(prefix="atelier-demo-"))
    click.echo(f"Starting the embedded stack in {data_dir} ...")
    t0 = time.monotonic()
    stack = Stack(data_dir)
    statuses: dict[str, str] = {}
    with stack:
        click.echo(f"  up in {time.monotonic() - t0:.1f} s: API {stack.api_url}, S3 {stack.s3_url}")
        client = Client(stack.api_url, stack.admin_key)
        items = make_catalogue(per_category, CATEGORIES, seed=7)
        click.echo(
            f"Drew a catalogue of {len(items)} garments in {len(CATEGORIES)} categories; uploading ..."
        )
        upload = client.upload([("catalogue.zip", catalogue_zip(items))])
        click.echo(f"  accepted {len(upload['accepted'])}, rejected {len(upload['rejected'])}")
        ingest = client.wait(upload["job"]["id"], timeout=300)
        statuses["ingest"] = ingest["status"]
        click.echo(
            f"ingest job {ingest['id']}: {ingest['status']} ({ingest['progress']['done']} photos prepared)"
        )
        stats = client.get("/v1/catalogue/stats")
        click.echo(f"catalogue: {stats['total']} images {stats['per_category']}")
        click.echo("Results:")
        click.echo(
            f"  originals  s3://{stack.settings.s3_bucket}/catalogue/originals/ (SeaweedFS in {data_dir}/s3)"
        )
        click.echo(f"  prepared   s3://{stack.settings.s3_bucket}/catalogue/prepared/")
        click.echo(f"  database   {stack.env['ATELIER_DATABASE_URL']}")
        client.close()
    click.echo("Stack stopped.")
    failed = {kind: status for kind, status in statuses.items() if status != "succeeded"}
    if failed:
        click.echo(f"demo FAILED: {failed}", err=True)
        return 1
    return 0
