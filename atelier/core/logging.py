"""Logging for every process (API, workers, beat, CLI): configured here and nowhere else.

    configure_logging("api")          once per process; idempotent
    with log_context(job_id=..., unit="chunk 3"):
        log.info("...")               -> one JSON line with job_id, unit, request_id, worker

One line per event, JSON by default (settings ATELIER_LOG_FORMAT=json|text, ATELIER_LOG_LEVEL). The fields
that tie a line to the work it belongs to live in context variables, so a request id set by the API
middleware, or a job id set when a Celery task starts, reaches every log call made beneath it
without being passed around.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("job_id", "unit", "request_id", "worker")
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"atelier_log_{name}", default=None) for name in CONTEXT_FIELDS
}
_configured: str | None = None
_process = os.environ.get("ATELIER_PROCESS", "")
# Attributes every LogRecord has; anything else passed as `extra=` is an event field worth keeping.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def bind(**fields: Any) -> dict[str, contextvars.Token]:
    """Set context fields for the rest of this context (a task, a request); returns reset tokens."""
    return {name: _context[name].set(None if v is None else str(v)) for name, v in fields.items()}


def unbind(tokens: dict[str, contextvars.Token]) -> None:
    for name, token in tokens.items():
        with contextlib.suppress(ValueError):  # a token from another context: nothing to undo here
            _context[name].reset(token)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    tokens = bind(**fields)
    try:
        yield
    finally:
        unbind(tokens)


def current_context() -> dict[str, str]:
    return {name: value for name, var in _context.items() if (value := var.get()) is not None}


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "process", "message", job_id, unit, request_id, worker, ...extra}."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": _process or record.processName,
            "message": record.getMessage(),
        }
        line.update(current_context())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in line:
                line[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: time, level, logger, message, then the context as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in current_context().items())
        when = self.formatTime(record, "%H:%M:%S")
        base = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base}  [{context}]" if context else base
        return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def configure_logging(process: str, *, fmt: str | None = None, level: str | None = None) -> None:
    """Route the root logger to stderr as one line per event. Called by the API app, the Celery
    `setup_logging` signal (workers and beat) and `atelier up`; the first call in a process wins."""
    global _configured, _process
    if _configured is not None:
        return
    from atelier.core.config import get_settings

    settings = get_settings()
    fmt = fmt or settings.log_format
    level = level or settings.log_level
    _process = process
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn and Celery install handlers of their own on these; let them propagate to ours instead.
    for name in ("uvicorn", "uvicorn.error", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The API's middleware already writes one line per request, with its route and request id.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    logging.captureWarnings(True)  # warnings become log lines too, not stray text on stderr
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _configured = process


def reset_for_tests() -> None:
    global _configured
    _configured = None
