"""Options shared by the client commands: where the API is and which key to use."""

from __future__ import annotations

import os
from pathlib import Path

import click

from atelier.cli.client import Client

api_option = click.option(
    "--api", "api_url", default="http://127.0.0.1:8000", envvar="ATELIER_API_URL", show_default=True
)
key_option = click.option("--key-file", type=click.Path(path_type=Path), default=None)


def make_client(api_url: str, key_file: Path | None) -> Client:
    """ATELIER_API_KEY, else --key-file, else the admin key of `atelier up` in .atelier/."""
    key = os.environ.get("ATELIER_API_KEY")
    if not key:
        path = key_file or Path(".atelier/admin.key")
        if not path.exists():
            raise click.UsageError("set ATELIER_API_KEY or pass --key-file (default .atelier/admin.key)")
        key = path.read_text().strip()
    return Client(api_url, key)
