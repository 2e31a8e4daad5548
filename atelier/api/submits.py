"""What every submit route shares: the Idempotency-Key header, the webhook destination check, and the
answers to a reused key (409 naming the header) and a quota (429 with Retry-After).

    POST /v1/generation-jobs, /v1/training-jobs, /v1/trend-reports, /v1/catalogue/images,
    /v1/catalogue/imports, /v1/schedules/{name}/run      accept `Idempotency-Key`; every body that
                                                          makes a job accepts `webhook_url`
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Header, HTTPException

from atelier.api.deps import invalid, too_many
from atelier.core import idempotency, quotas
from atelier.core.config import Settings
from atelier.webhooks import outbound

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        max_length=200,
        description="a repeat with the same key and body answers 200 with the first job; "
        "the same key with another body answers 409",
    ),
]


def repeated(model: type) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a submit's 200: the first request's answer, for a repeated key."""
    return {200: {"model": model, "description": "the same answer, for a repeated Idempotency-Key"}}


def checked_webhook_url(url: object | None, settings: Settings, *loc: str) -> str | None:
    """The URL as a string, or a 422 naming `loc` when the destination policy refuses it."""
    if url is None or url == "":
        return None
    try:
        outbound.check_destination(str(url), settings)
    except outbound.RefusedDestination as exc:
        raise invalid(*loc, msg=str(exc)) from exc
    return str(url)


@contextmanager
def submit_errors() -> Iterator[None]:
    try:
        yield
    except idempotency.IdempotencyConflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    except quotas.QuotaExceeded as exc:
        raise too_many(str(exc), exc.retry_after) from exc
