"""Where the API is and which key to use, when the caller does not say: ATELIER_API_URL and
ATELIER_API_KEY, as for the `atelier` command."""

from __future__ import annotations

import os
from importlib import metadata

DEFAULT_URL = "http://127.0.0.1:8000"


def version() -> str:
    try:
        return metadata.version("atelier")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def resolve(base_url: str | None, api_key: str | None) -> tuple[str, str, str]:
    url = (base_url or os.environ.get("ATELIER_API_URL") or DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get("ATELIER_API_KEY")
    if not key:
        raise ValueError("no API key: pass api_key= or set ATELIER_API_KEY")
    return url, key.strip(), version()
