"""What the sync and async clients share about sending: building the httpx request of a Call, and the
retry policy.

Retries: only a call that may be repeated (a GET, a PUT, a cancel, a submit with its Idempotency-Key)
is retried, with exponential backoff and jitter, on a connection error or time-out, on 429 (honouring
Retry-After) and on 502/503/504; anything else fails at once with the typed error.
"""

from __future__ import annotations

import random
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from atelier.client._calls import Call
from atelier.client.errors import ApiUnreachable, retry_after_seconds

RETRY_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4
    backoff: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.backoff * 2**attempt * (0.5 + random.random()))

    def after_error(self, call: Call[Any], attempt: int, exc: httpx.TransportError) -> float | None:
        """Seconds to wait before trying `call` again after a transport error, or None to give up."""
        if not call.idempotent or attempt >= self.retries:
            return None
        return self.delay(attempt)

    def after_response(self, call: Call[Any], attempt: int, response: httpx.Response) -> float | None:
        if response.status_code not in RETRY_STATUS or not call.idempotent or attempt >= self.retries:
            return None
        wait = retry_after_seconds(response) if response.status_code == 429 else None
        return min(self.max_delay, wait) if wait is not None else self.delay(attempt)


def build(http: httpx.Client | httpx.AsyncClient, call: Call[Any], files: ExitStack) -> httpx.Request:
    """The request of one attempt; files named by path are opened here (and closed by `files`), so a
    retried upload sends them again from the start."""
    parts = None
    if call.files:
        parts = []
        for field_name, filename, source in call.files:
            body = files.enter_context(Path(source).open("rb")) if isinstance(source, Path) else source  # noqa: SIM115
            parts.append((field_name, (filename, body)))
    return http.build_request(call.method, call.path, files=parts, **call.request_kwargs())


def unreachable(call: Call[Any], exc: httpx.TransportError) -> ApiUnreachable:
    return ApiUnreachable(f"{call.method} {call.path}: cannot reach the API ({type(exc).__name__}: {exc})")


def client_headers(api_key: str, version: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": f"atelier-client/{version}"}
