"""Options shared by the client commands: where the API is and which key to use; how a job is printed
and what exit code it means (atelier.cli.exits)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from atelier.cli import exits
from atelier.client import Client
from atelier.client.models import ApiModel

api_option = click.option(
    "--api", "api_url", default="http://127.0.0.1:8000", envvar="ATELIER_API_URL", show_default=True
)
key_option = click.option("--key-file", type=click.Path(path_type=Path), default=None)
wait_timeout_option = click.option(
    "--timeout",
    "wait_timeout",
    type=float,
    default=7 * 24 * 3600,
    show_default=True,
    help="seconds to wait before giving up (exit 7)",
)


def read_key(key_file: Path | None) -> str:
    """ATELIER_API_KEY, else --key-file, else the admin key of `atelier up` in .atelier/."""
    key = os.environ.get("ATELIER_API_KEY")
    if not key:
        path = key_file or Path(".atelier/admin.key")
        if not path.exists():
            raise click.UsageError("set ATELIER_API_KEY or pass --key-file (default .atelier/admin.key)")
        key = path.read_text().strip()
    return key


def make_client(api_url: str, key_file: Path | None) -> Client:
    return Client(api_url, read_key(key_file))


def echo_json(value: Any) -> None:
    """JSON on stdout (progress and messages go to stderr): `| jq` sees only this."""
    if isinstance(value, ApiModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, ApiModel) else v for v in value]
    click.echo(json.dumps(value, indent=2, default=str))


def exit_with_job(job: Any) -> None:
    """Print the job and end the command with the exit code of its status."""
    echo_json(job)
    code = exits.of_job(job.status)
    if code:
        raise SystemExit(code)
