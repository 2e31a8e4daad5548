"""Overload is answered at once with 503 and Retry-After, never with a 500 after a long wait.

    too many requests in flight      -> 503 before the request is read (ConcurrencyLimit; API-key
                                        lookups of the limits middleware take the same slots)
    no SQL connection within ~1 s    -> 503 (sqlalchemy's pool TimeoutError)
    SQLite file locked past timeout  -> 503 ("database is locked")

Long-lived responses (the server-sent event stream) and the health check are not counted: a hundred
open streams must not shut the API.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from atelier.core.config import get_settings

UNCOUNTED_SUFFIXES = ("/stream", "/healthz")


def _retry_after() -> str:
    return str(get_settings().api_retry_after_seconds)


def overloaded(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": _retry_after()})


class Slots:
    """The process's ATELIER_API_MAX_CONCURRENT_REQUESTS slots, shared by the requests (ConcurrencyLimit)
    and by the API-key lookups that the limits middleware makes before a request is let in: a flood of
    random bearer tokens waits for slots like any request instead of going around the cap. The event
    loop is single-threaded, so a check and its increment cannot interleave."""

    def __init__(self) -> None:
        self.in_flight = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= get_settings().api_max_concurrent_requests:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1


slots = Slots()


def busy_detail() -> str:
    limit = get_settings().api_max_concurrent_requests
    return f"the API is busy ({limit} requests in flight, ATELIER_API_MAX_CONCURRENT_REQUESTS)"


class ConcurrencyLimit:
    """Pure ASGI middleware: at most ATELIER_API_MAX_CONCURRENT_REQUESTS requests at once."""

    def __init__(self, app, shared: Slots | None = None) -> None:  # noqa: ANN001
        self.app = app
        self.slots = shared or slots

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["path"].endswith(UNCOUNTED_SUFFIXES):
            await self.app(scope, receive, send)
            return
        if not self.slots.try_acquire():
            detail = busy_detail()
            body = json.dumps({"detail": detail}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", _retry_after().encode()),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()


def install(app: FastAPI) -> None:
    app.add_middleware(ConcurrencyLimit)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        return overloaded(
            "the API is busy: no database connection free within "
            f"{get_settings().db_pool_timeout_seconds:g} s (ATELIER_DB_POOL_SIZE)"
        )

    @app.exception_handler(OperationalError)
    async def _locked(request: Request, exc: OperationalError) -> JSONResponse:
        if "database is locked" in str(exc.orig):
            return overloaded("the database is busy (locked by another writer); retry shortly")
        raise exc
