"""Auth and body-size limits enforced before a request body is read (a pure ASGI middleware).

FastAPI parses a form or JSON body before any dependency runs, so a check in a dependency comes after
a client without a key has already streamed its gigabytes. This middleware runs first:

    /v1/... request ── no key / unknown, revoked or expired key ── 401 (the body is never read)
                   ── Content-Length over the route's limit ── 413 (never read either)
                   ── body streamed past the limit (chunked, or lying) ── 413 as soon as it passes it
                   └─ otherwise the app, whose dependencies check scopes (403) as before

The limit is ATELIER_MAX_REQUEST_BYTES on the upload and import routes and ATELIER_MAX_JSON_BODY_BYTES
everywhere else; each 413 names the setting. The key comes from
api.key_cache (a miss is read on a thread).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException

from atelier.api import key_cache
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


async def _send_json(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            # the unread body stays on the socket: the connection must close after this answer
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        secret = _bearer(headers)
        if secret is None:
            await _send_json(
                send,
                401,
                "missing API key: send `Authorization: Bearer <key>`",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if await key_cache.resolve(secret) is None:  # cached: the route's own check costs nothing more
            await _send_json(
                send, 401, "unknown, revoked or expired API key", [(b"www-authenticate", b"Bearer")]
            )
            return
        limit, setting = body_limit(scope["path"], scope["method"])
        declared = next((v for k, v in headers if k == b"content-length"), None)
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                await _send_json(send, 400, "Content-Length is not a number")
                return
            if too_large:
                await _send_json(send, 413, BodyTooLarge(limit, setting).detail)
                return
        await self.app(scope, _counting(receive, limit, setting), send)


def _counting(receive: Any, limit: int, setting: str) -> Any:
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # FastAPI re-raises an HTTPException met while reading the body: the client gets a 413
                raise BodyTooLarge(limit, setting)
        return message

    return wrapped
