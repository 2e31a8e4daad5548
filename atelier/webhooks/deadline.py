"""One total deadline for a whole webhook attempt: connect, TLS, request, status line, headers and body.

httpx bounds each network operation, never their sum, so a receiver that drips its status line or
headers a byte at a time (each byte well within the per-read time-out) would hold a worker until
Celery's soft limit. Here every socket operation gets what is left of the deadline as its time-out
(or its own time-out, whichever is shorter), and one started past the deadline fails at once; httpx
reports either as a time-out. No extra thread and nothing left running once the attempt gives up.
"""

from __future__ import annotations

import time
import typing

import httpcore
import httpx

WHAT = "webhook attempt past its total deadline (ATELIER_WEBHOOK_TIMEOUT_SECONDS)"


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner, self._deadline = inner, deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error(WHAT)
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:  # noqa: ANN001
        left = self._left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, left), self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, deadline: float) -> None:
        self._inner, self._deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable | None = None,
    ) -> httpcore.NetworkStream:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout(WHAT)
        left = left if timeout is None else min(timeout, left)
        stream = self._inner.connect_tcp(host, port, left, local_address, socket_options)
        return _Stream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (its error mapping and streaming) over sockets bound by `deadline`, a
    time.monotonic() value. One transport per attempt: the deadline is the attempt's."""

    def __init__(self, deadline: float) -> None:  # noqa: D107
        # httpx's constructor takes no network backend: build the pool it would build (no proxy,
        # HTTP/1.1, verified TLS) with ours, rather than load the CA bundle twice per attempt
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=1,
            network_backend=_Backend(deadline),
        )
