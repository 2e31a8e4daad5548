"""Auth and body-size limits enforced before a request body is read (a pure ASGI middleware).

FastAPI parses a form or JSON body before any dependency runs, so a check in a dependency comes after
a client without a key has already streamed its gigabytes. This middleware runs first:

    /v1/... request ── no key / unknown, revoked or expired key ── 401 (the body is never read); a key
                      that needs a query takes one of the concurrency slots (api/overload.py) meanwhile
                   ── no SQL connection to check the key in time ── 503 + Retry-After
                   ── Content-Length over the route's limit ── 413 (never read either)
                   ── body streamed past the limit (chunked, or lying) ── 413 as soon as it passes it
                   └─ otherwise the app, whose dependencies check scopes (403) as before

The limit is ATELIER_MAX_REQUEST_BYTES on the upload and import routes and ATELIER_MAX_JSON_BODY_BYTES
everywhere else; each 413 names the setting. Gallery form posts (`/ui/...`, sign-in included) get
ATELIER_MAX_FORM_BODY_BYTES the same way, before the form is parsed and before their session is
checked. The key comes from api.key_cache (a miss is read on a
thread).

An answer that leaves body bytes unread is sent whole, then the rest of the body is read and thrown
away (up to ATELIER_OVERSIZE_DRAIN_BYTES and _SECONDS; a 401 drains at most the JSON limit) before
the connection closes. Closing a socket whose receive buffer holds data makes the kernel send a
reset, and ordinary clients, which send their whole body before they read, then see "connection
reset" instead of the status: the drain is what lets them read the 413.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import HTTPException
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from atelier.api import key_cache, overload
from atelier.core.config import get_settings

UPLOAD_PATHS = {"/v1/catalogue/images", "/v1/catalogue/imports"}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, setting: str):
        super().__init__(
            413, detail=f"request body is over {limit} bytes, the limit set by ATELIER_{setting.upper()}"
        )


def body_limit(path: str, method: str) -> tuple[int, str]:
    settings = get_settings()
    if method == "POST" and path in UPLOAD_PATHS:
        return settings.max_request_bytes, "max_request_bytes"
    return settings.max_json_body_bytes, "max_json_body_bytes"


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None
    return None


def _answer(status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> tuple[dict, bytes]:
    body = json.dumps({"detail": detail}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        # the unread body stays on the socket: the connection closes after this answer (and the drain)
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *headers,
        ],
    }
    return start, body


async def drain(receive: Any, max_bytes: int, seconds: float) -> int:
    """Read and discard the request body until it ends, or max_bytes or seconds have passed."""
    seen, deadline = 0, time.monotonic() + seconds
    while seen <= max_bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            message = await asyncio.wait_for(receive(), timeout=left)
        except TimeoutError:
            break
        if message["type"] != "http.request":
            break
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return seen


async def _refuse(
    send: Any,
    receive: Any,
    status: int,
    detail: str,
    headers: list[tuple[bytes, bytes]] = (),
    *,
    drain_bytes: int,
) -> None:
    start, body = _answer(status, detail, headers)
    await send(start)
    if drain_bytes <= 0:
        await send({"type": "http.response.body", "body": body})
        return
    # the whole answer first (a client that reads early has it at once), the response kept open
    # while the body is drained, then the end, which closes the connection
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await drain(receive, drain_bytes, get_settings().oversize_drain_seconds)
    await send({"type": "http.response.body", "body": b""})


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Content-Length, -1 when it is not a number, None when absent (chunked or empty)."""
    declared = next((v for k, v in headers if k == b"content-length"), None)
    if declared is None:
        return None
    try:
        return int(declared)
    except ValueError:
        return -1


def _drain_budget(declared: int | None, cap: int) -> int:
    # a declared body past the cap is not worth reading: the client will see the reset either way
    if declared is not None and declared > cap:
        return 0
    return cap if declared is None else declared


class LimitsMiddleware:
    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/ui")
            and scope["method"] not in ("GET", "HEAD")
        ):
            await self._form(scope, receive, send)
            return
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        headers = scope["headers"]
        declared = _declared_length(headers)
        secret = _bearer(headers)
        unauthorized = None
        if secret is None:
            unauthorized = "missing API key: send `Authorization: Bearer <key>`"
        else:
            known, key = key_cache.decided(secret)
            if not known and not overload.slots.try_acquire():  # a query is needed: it takes a slot
                retry = [(b"retry-after", str(settings.api_retry_after_seconds).encode())]
                budget = _drain_budget(
                    declared, min(settings.max_json_body_bytes, settings.oversize_drain_bytes)
                )
                await _refuse(send, receive, 503, overload.busy_detail(), retry, drain_bytes=budget)
                return
            pool_busy = False
            try:
                if not known:  # cached now: the route's own check costs no more
                    key = await key_cache.resolve(secret)
            except (PoolTimeout, OperationalError) as exc:
                # outside the app, so its 503 handlers (api/overload.py) cannot answer for it
                if isinstance(exc, OperationalError) and "database is locked" not in str(exc.orig):
                    raise
                pool_busy = True
            finally:
                if not known:
                    overload.slots.release()  # before any answer: a drain never holds a slot
            if pool_busy:
                retry = [(b"retry-after", str(settings.api_retry_after_seconds).encode())]
                detail = "the API is busy: no database connection to check the key; retry shortly"
                budget = _drain_budget(
                    declared, min(settings.max_json_body_bytes, settings.oversize_drain_bytes)
                )
                await _refuse(send, receive, 503, detail, retry, drain_bytes=budget)
                return
            if key is None:
                unauthorized = "unknown, revoked or expired API key"
        if unauthorized:
            budget = _drain_budget(declared, min(settings.max_json_body_bytes, settings.oversize_drain_bytes))
            await _refuse(
                send, receive, 401, unauthorized, [(b"www-authenticate", b"Bearer")], drain_bytes=budget
            )
            return
        limit, setting = body_limit(scope["path"], scope["method"])
        if declared == -1:
            await _refuse(send, receive, 400, "Content-Length is not a number", drain_bytes=0)
            return
        if declared is not None and declared > limit:
            budget = _drain_budget(declared, settings.oversize_drain_bytes)
            await _refuse(send, receive, 413, BodyTooLarge(limit, setting).detail, drain_bytes=budget)
            return
        counting = _Counting(receive, limit, setting)
        await self.app(scope, counting, counting.draining_send(send, settings.oversize_drain_bytes))

    async def _form(self, scope: dict, receive: Any, send: Any) -> None:
        """A gallery form post: limited before the form is parsed and before the session is looked at
        (the routes check the session cookie; /ui/login needs none)."""
        settings = get_settings()
        limit, setting = settings.max_form_body_bytes, "max_form_body_bytes"
        declared = _declared_length(scope["headers"])
        if declared == -1:
            await _refuse(send, receive, 400, "Content-Length is not a number", drain_bytes=0)
            return
        if declared is not None and declared > limit:
            budget = _drain_budget(declared, min(settings.max_json_body_bytes, settings.oversize_drain_bytes))
            await _refuse(send, receive, 413, BodyTooLarge(limit, setting).detail, drain_bytes=budget)
            return
        counting = _Counting(receive, limit, setting)
        await self.app(scope, counting, counting.draining_send(send, settings.max_json_body_bytes))


class _Counting:
    """The app's receive, counting body bytes: past the limit it raises BodyTooLarge, which FastAPI
    answers with a 413; the app's answer is then held open while the rest of the body drains."""

    def __init__(self, receive: Any, limit: int, setting: str):
        self.receive, self.limit, self.setting = receive, limit, setting
        self.seen = 0
        self.overflowed = False

    async def __call__(self) -> dict:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.overflowed = True
                raise BodyTooLarge(self.limit, self.setting)
        return message

    def draining_send(self, send: Any, drain_bytes: int) -> Any:
        async def wrapped(message: dict) -> None:
            last = message["type"] == "http.response.body" and not message.get("more_body", False)
            if not (last and self.overflowed and drain_bytes > 0):
                await send(message)
                return
            await send({**message, "more_body": True})
            await drain(self.receive, drain_bytes, get_settings().oversize_drain_seconds)
            await send({"type": "http.response.body", "body": b""})

        return wrapped
