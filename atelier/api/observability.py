"""Per-request observability: a request id, a latency histogram by route, one log line per request.

A plain ASGI middleware (not BaseHTTPMiddleware) so that streamed responses such as the job event
stream pass through untouched. The route label is the route's path template (`/v1/jobs/{job_id}`),
never the raw path, so that the number of series stays bounded whatever ids clients send.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from starlette.routing import Match

from atelier.core.logging import log_context

log = logging.getLogger("atelier.api")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
REQUEST_SECONDS = Histogram(
    "atelier_http_request_duration_seconds",
    "API request latency by route template, method and status code",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
    registry=REGISTRY,
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ObservabilityMiddleware:
    def __init__(self, app):  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        status = 500
        started = time.perf_counter()

        async def send_with_id(message) -> None:  # noqa: ANN001
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                template = route_template(scope)
                REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(elapsed)
                if template not in ("/metrics", "/healthz"):
                    log.info(
                        "%s %s -> %s in %.1f ms",
                        scope["method"],
                        template,
                        status,
                        elapsed * 1000,
                        extra={"status": status, "route": template, "duration_ms": round(elapsed * 1000, 2)},
                    )


def route_template(scope: dict) -> str:
    """The matched route's path template; for a request answered before routing (a 401 or 413 of the
    limits middleware) the template it would have matched, so raw ids never become labels."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, child = candidate.matches(scope)
        if match is not Match.FULL:
            continue
        if "route" not in child and hasattr(candidate, "_match"):
            # FastAPI's included routers defer the match; their own matcher names the route
            match, child = candidate._match(scope)[:2]
        found = child.get("route", candidate)
        return getattr(found, "path", None) or "unmatched"
    return "unmatched"
