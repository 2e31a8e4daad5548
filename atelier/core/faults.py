"""Infrastructure faults: what they are, and waiting them out.

    is_infrastructure(exc)   S3 / SQL / broker unreachable, timed out, throttled or restarting: not the
                             job's fault. Everything else (a bad model, bad input, a bug) is, and a
                             permanent SQL error anywhere in the chain (a constraint, a value the column
                             cannot hold, SQL the schema does not know) is never infrastructure: retried,
                             it would fail the same way forever.
    retrying(fn, ...)        call fn, retrying infrastructure faults with exponential backoff and full
                             jitter until `deadline` seconds have passed; then InfrastructureUnavailable.

A unit of work that meets a fault keeps its lease and retries in place; after ATELIER_INFRA_RETRY_SECONDS
it goes back to its queue (core.units.give_back). Neither uses up its deliveries: a fault of S3, SQL or
the broker delays work, it never fails it.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# S3 error codes that mean "try again" (throttling, a node restarting), not "this request is wrong"
_S3_RETRYABLE = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
}
_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}


class InfrastructureUnavailable(Exception):
    """An infrastructure fault outlasted the time given to it; the work should be retried later."""


# DB-API error classes (PEP 249) that the same statement would raise again: the caller's own mistake.
# psycopg's specific errors (UniqueViolation, StringDataRightTruncation, UndefinedTable...) subclass them.
_SQL_PERMANENT = {"IntegrityError", "DataError", "ProgrammingError", "NotSupportedError"}
# SQLite reports schema and syntax errors as OperationalError, alongside "database is locked"
_SQLITE_PERMANENT_MESSAGES = ("no such table", "no such column", "has no column named", "syntax error")


def is_infrastructure(exc: BaseException) -> bool:
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if any(is_permanent_sql(e) for e in chain):
        return False
    return any(_is_infrastructure_one(e) for e in chain)


def is_permanent_sql(exc: BaseException) -> bool:
    """A SQL error that no retry can cure (checked before the infrastructure rules: sqlite3's schema
    errors are OperationalErrors, like a locked database)."""
    module = type(exc).__module__ or ""
    if not module.startswith(("sqlalchemy", "psycopg", "sqlite3")):
        return False
    if any(cls.__name__ in _SQL_PERMANENT for cls in type(exc).__mro__):
        return True
    return type(exc).__name__ == "OperationalError" and any(
        m in str(exc).lower() for m in _SQLITE_PERMANENT_MESSAGES
    )


def _is_infrastructure_one(exc: BaseException) -> bool:
    if isinstance(exc, InfrastructureUnavailable | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return True
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if module.startswith(("botocore", "boto3", "urllib3")):
        if name == "ClientError":
            error = getattr(exc, "response", {}).get("Error", {})
            status = str(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            return str(error.get("Code", "")) in _S3_RETRYABLE or status in _S3_RETRYABLE
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
        return name not in ("ParamValidationError", "NoCredentialsError", "NoSuchBucket")
    if module.startswith("sqlalchemy"):
        # OperationalError covers "database is locked", lost connections and server restarts;
        # TimeoutError is the pool's; IntegrityError and friends are the caller's own
        if name in ("OperationalError", "InterfaceError", "TimeoutError", "DisconnectionError"):
            return True
        return bool(getattr(exc, "connection_invalidated", False))
    if module.startswith(("kombu", "redis", "amqp")):
        return name in ("OperationalError", "ConnectionError", "TimeoutError", "BusyLoadingError")
    return module.startswith(("psycopg", "sqlite3")) and name in ("OperationalError", "InterfaceError")


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2**attempt))


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    deadline: float,
    cap: float = 30.0,
    should_stop: Callable[[], bool] | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            attempt += 1
            waited = time.monotonic() - started
            if waited >= deadline or (should_stop is not None and should_stop()):
                raise InfrastructureUnavailable(f"{what}: {type(exc).__name__} for {waited:.0f} s") from exc
            delay = min(backoff(attempt, cap=cap), max(0.05, deadline - waited))
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s: %s; retrying (attempt %d, %.1f s)", what, _short(exc), attempt, delay)
            if on_retry is not None:
                on_retry(attempt, exc)
            time.sleep(max(delay, 0.05))


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:160]}"
