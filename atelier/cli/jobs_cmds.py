"""`atelier jobs list|cancel|events`: the job commands of the HTTP client. JSON on stdout only."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import click

from atelier.cli.options import api_option, key_option, make_client


@click.group()
def jobs() -> None:
    """List, cancel and follow jobs."""


@jobs.command("list")
@click.option("--kind", type=click.Choice(["ingest", "train", "generate"]), default=None)
@click.option(
    "--status",
    type=click.Choice(["queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled"]),
    default=None,
)
@click.option("--limit", type=int, default=50, show_default=True, help="newest first; pages as needed")
@api_option
@key_option
def jobs_list(kind: str | None, status: str | None, limit: int, api_url: str, key_file: Path | None) -> None:
    """Print the newest jobs as one JSON array."""
    client = make_client(api_url, key_file)
    items = list(itertools.islice(client.jobs(kind=kind, status=status), limit))
    click.echo(json.dumps(items, indent=2, default=str))


@jobs.command("cancel")
@click.argument("job_id")
@api_option
@key_option
def jobs_cancel(job_id: str, api_url: str, key_file: Path | None) -> None:
    """Ask a job to stop (finished parts stay); prints the job."""
    click.echo(json.dumps(make_client(api_url, key_file).cancel(job_id), indent=2))


@jobs.command("events")
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="keep printing new events until the job ends")
@api_option
@key_option
def jobs_events(job_id: str, follow: bool, api_url: str, key_file: Path | None) -> None:
    """Print the job's timeline, one JSON object per line."""
    client = make_client(api_url, key_file)
    last = None
    for event in client.events(job_id):
        click.echo(json.dumps(event, default=str))
        last = event["id"]
    if not follow:
        return
    for _ in client.stream(job_id):  # each change of the job: print the events it brought
        page = client.get(f"/v1/jobs/{job_id}/events", limit=500, cursor=last)
        for event in page["items"]:
            click.echo(json.dumps(event, default=str))
            last = event["id"]
