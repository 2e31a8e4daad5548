"""What a call of the client can raise. Every error answered by the API carries its status and the
API's own `detail`; a 422's `field` names the field at fault.

    AtelierError
     ├── ApiError                     the API answered 4xx or 5xx: .status_code, .detail, .field
     │    ├── BadRequest              400
     │    ├── Unauthorized            401  missing, unknown, revoked or expired key
     │    ├── Forbidden               403  the key lacks the scope, or the job is another key's
     │    ├── NotFound                404
     │    ├── Conflict                409  e.g. an Idempotency-Key reused with another body
     │    ├── PayloadTooLarge         413
     │    ├── InvalidRequest          422  .field: the body, query or form field at fault
     │    ├── RateLimited             429  .retry_after in seconds
     │    └── ServerError             5xx
     ├── ApiUnreachable               no answer: connection refused, DNS, a time-out (after retries)
     ├── ChecksumMismatch             a downloaded file is not the bytes the API listed
     └── WaitTimeout                  a job still running when a wait's time ran out (a TimeoutError)
"""

from __future__ import annotations

from typing import Any

import httpx


class AtelierError(Exception):
    """The base of everything the client raises on purpose."""


class ApiError(AtelierError):
    def __init__(self, status_code: int, detail: Any, *, method: str = "", path: str = ""):
        self.status_code, self.detail, self.method, self.path = status_code, detail, method, path
        where = f"{method} {path} -> " if method else ""
        super().__init__(f"{where}{status_code}: {describe(detail)}")

    @property
    def field(self) -> str | None:
        """The name of the field at fault, where the API named one (FastAPI's `loc`: its last part)."""
        if isinstance(self.detail, list) and self.detail and isinstance(self.detail[0], dict):
            loc = self.detail[0].get("loc") or []
            names = [str(p) for p in loc if not isinstance(p, int)]
            return names[-1] if names else None
        return None


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class InvalidRequest(ApiError):
    pass


class RateLimited(ApiError):
    def __init__(self, status_code: int, detail: Any, *, method: str = "", path: str = "", retry_after=None):  # noqa: ANN001
        super().__init__(status_code, detail, method=method, path=path)
        self.retry_after: float | None = retry_after


class ServerError(ApiError):
    pass


class ApiUnreachable(AtelierError):
    """The API did not answer (after the retries an idempotent call gets)."""


class ChecksumMismatch(AtelierError):
    pass


class WaitTimeout(AtelierError, TimeoutError):
    def __init__(self, message: str, job: Any = None):
        super().__init__(message)
        self.job = job


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
}


def describe(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI's validation errors: name each field at fault
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
            for d in detail
        )
    return str(detail)


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def error_of(response: httpx.Response) -> ApiError:
    """The typed error of an answer >= 400; `detail` is the API's own, or the body's text."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text or response.reason_phrase
    where = {"method": response.request.method, "path": response.request.url.path}
    code = response.status_code
    if code == 429:
        return RateLimited(code, detail, retry_after=retry_after_seconds(response), **where)
    if code >= 500:
        return ServerError(code, detail, **where)
    return _BY_STATUS.get(code, ApiError)(code, detail, **where)
