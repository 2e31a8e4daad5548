"""`atelier jobs list|cancel|events`: the job commands of the HTTP client. JSON on stdout only."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import click

from atelier.cli.options import api_option, echo_json, key_option, make_client


@click.group()
def jobs() -> None:
    """List, cancel and follow jobs."""


@jobs.command("list")
@click.option("--kind", type=click.Choice(["ingest", "train", "generate", "trend"]), default=None)
@click.option(
    "--status",
    type=click.Choice(["queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled"]),
    default=None,
)
@click.option("--mine", is_flag=True, help="only this key's jobs (all a non-admin key sees)")
@click.option("--limit", type=int, default=50, show_default=True, help="newest first; pages as needed")
@api_option
@key_option
def jobs_list(
    kind: str | None, status: str | None, mine: bool, limit: int, api_url: str, key_file: Path | None
) -> None:
    """Print the newest jobs as one JSON array."""
    client = make_client(api_url, key_file)
    page_size = max(1, min(limit, 500))
    echo_json(
        list(
            itertools.islice(
                client.jobs.list(kind=kind, status=status, mine=mine, page_size=page_size), limit
            )
        )
    )


@jobs.command("cancel")
@click.argument("job_id")
@api_option
@key_option
def jobs_cancel(job_id: str, api_url: str, key_file: Path | None) -> None:
    """Ask a job to stop (finished parts stay); prints the job."""
    echo_json(make_client(api_url, key_file).jobs.cancel(job_id))


@jobs.command("events")
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="keep printing new events until the job ends")
@api_option
@key_option
def jobs_events(job_id: str, follow: bool, api_url: str, key_file: Path | None) -> None:
    """Print the job's timeline, one JSON object per line."""
    client = make_client(api_url, key_file)
    last = 0

    def new_events() -> None:
        nonlocal last
        for event in client.jobs.events(job_id):
            if event.id > last:
                click.echo(json.dumps(event.model_dump(mode="json")))
                last = event.id

    new_events()
    if follow:
        for _ in client.jobs.stream(job_id):  # each change of the job: print the events it brought
            new_events()
        new_events()
