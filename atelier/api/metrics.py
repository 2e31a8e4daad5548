"""GET /metrics: Prometheus series of the API and of the work recorded in SQL.

    atelier_http_request_duration_seconds{method,route,status}   histogram (atelier/api/observability.py)
    atelier_jobs{kind,state}                                    jobs by kind and state
    atelier_queued_units{queue}                                 units of work waiting, per Celery queue
    atelier_images_generated_total                              rate() = images generated per second
    atelier_training_steps_total                                rate() = training steps per second
    atelier_retries_total{reason}                               chunk retries (error, CUDA OOM)
    atelier_redeliveries_total{unit}                            deliveries after the first (job, chunk)
    atelier_lease_recoveries_total{unit}                        stale heartbeats the reconciler re-queued
    atelier_webhook_deliveries_total{outcome}                   delivered / failed
    atelier_metrics_sql_up                                      1 when the SQL figures above are fresh

The SQL is the source of truth, so every API replica reports the same numbers, and the counters
are counts of rows (images, events) rather than in-process increments that a restart would lose.
The queries are aggregates over indexed columns, cached for ATELIER_METRICS_CACHE_SECONDS so that
several scrapers cost one round of queries. Worker-side series (task latency, GPU memory) come from
each worker's own endpoint: atelier/workers/metrics.py.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from atelier.api.observability import REGISTRY
from atelier.core import jobs
from atelier.core.config import get_settings
from atelier.core.db import session_scope
from atelier.core.models import Job, JobEvent, WorkUnit
from atelier.core.queue import QUEUES
from atelier.core.units import KINDS as UNIT_KINDS

log = logging.getLogger("atelier.metrics")
router = APIRouter(tags=["operations"])

# Which job events count as what. Event kinds are written by atelier/core/units.py and the tasks.
RETRY_EVENTS = {
    "chunk_retried": "error",
    "finalize_retried": "error",
    "chunk_oom": "cuda_oom",
    "delayed": "infrastructure",
}
WEBHOOK_EVENTS = {"webhook_delivered": "delivered", "webhook_failed": "failed"}
REQUEUED = "requeued"  # the reconciler found a unit's worker gone (atelier/core/units.py)
COUNTED_EVENTS = {*RETRY_EVENTS, *WEBHOOK_EVENTS}


def sql_figures(session) -> dict[str, Any]:  # noqa: ANN001
    by_state = session.execute(
        select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
    ).all()
    done_by_kind = dict(
        session.execute(
            select(Job.kind, func.coalesce(func.sum(Job.progress_done), 0)).group_by(Job.kind)
        ).all()
    )
    queued: dict[str, int] = dict.fromkeys(QUEUES, 0)
    for queue, n in session.execute(
        select(WorkUnit.queue, func.count()).where(WorkUnit.status == "queued").group_by(WorkUnit.queue)
    ).all():
        queued[queue] = n
    events = dict(
        session.execute(
            select(JobEvent.kind, func.count())
            .where(JobEvent.kind.in_(COUNTED_EVENTS))
            .group_by(JobEvent.kind)
        ).all()
    )
    redeliveries = dict(
        session.execute(
            select(WorkUnit.kind, func.sum(WorkUnit.deliveries - 1))
            .where(WorkUnit.deliveries > 1)
            .group_by(WorkUnit.kind)
        ).all()
    )
    recoveries: dict[str, int] = {}
    for data in session.scalars(select(JobEvent.data).where(JobEvent.kind == REQUEUED)):
        kind = (data or {}).get("kind", "unknown")
        recoveries[kind] = recoveries.get(kind, 0) + 1
    return {
        "jobs": [(kind, status, n) for kind, status, n in by_state],
        "queued": queued,
        "images": int(done_by_kind.get("generate", 0)),
        "steps": int(done_by_kind.get("train", 0)),
        "events": events,
        "redeliveries": {k: int(v or 0) for k, v in redeliveries.items()},
        "recoveries": recoveries,
    }


class SqlCollector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def _figures(self) -> dict[str, Any] | None:
        ttl = get_settings().metrics_cache_seconds
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < ttl:
                return self._cached[1]
            try:
                with session_scope(readonly=True) as session:
                    figures = sql_figures(session)
            except Exception:
                log.warning("metrics: the SQL figures could not be read", exc_info=True)
                return None
            self._cached = (time.monotonic(), figures)
            return figures

    def describe(self) -> list:
        return []  # series depend on the data; describe nothing so registration does not query SQL

    def collect(self):  # noqa: ANN201
        figures = self._figures()
        up = GaugeMetricFamily("atelier_metrics_sql_up", "1 when the SQL-derived series could be read")
        up.add_metric([], 1.0 if figures else 0.0)
        yield up
        if not figures:
            return
        states = GaugeMetricFamily("atelier_jobs", "Jobs by kind and state", labels=["kind", "state"])
        seen = {(k, s): n for k, s, n in figures["jobs"]}
        for kind in jobs.KINDS:
            for state in jobs.STATES:
                states.add_metric([kind, state], seen.get((kind, state), 0))
        yield states
        queued = GaugeMetricFamily(
            "atelier_queued_units", "Units of work waiting, per queue", labels=["queue"]
        )
        for queue, n in sorted(figures["queued"].items()):
            queued.add_metric([queue], n)
        yield queued
        yield _counter("atelier_images_generated", "Generated images that exist", figures["images"])
        yield _counter("atelier_training_steps", "Training steps done over all train jobs", figures["steps"])
        events = figures["events"]
        retries = CounterMetricFamily("atelier_retries", "Unit retries by reason", labels=["reason"])
        by_reason: dict[str, int] = {}
        for kind, reason in RETRY_EVENTS.items():
            by_reason[reason] = by_reason.get(reason, 0) + events.get(kind, 0)
        for reason, n in sorted(by_reason.items()):
            retries.add_metric([reason], n)
        yield retries
        redelivered = CounterMetricFamily(
            "atelier_redeliveries", "Deliveries of a unit of work after its first", labels=["unit"]
        )
        recovered = CounterMetricFamily(
            "atelier_lease_recoveries", "Stale leases re-queued by the reconciler", labels=["unit"]
        )
        for kind in UNIT_KINDS:
            redelivered.add_metric([kind], figures["redeliveries"].get(kind, 0))
            recovered.add_metric([kind], figures["recoveries"].get(kind, 0))
        yield redelivered
        yield recovered
        hooks = CounterMetricFamily("atelier_webhook_deliveries", "Webhook outcomes", labels=["outcome"])
        for kind, outcome in WEBHOOK_EVENTS.items():
            hooks.add_metric([outcome], events.get(kind, 0))
        yield hooks


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


REGISTRY.register(SqlCollector())


def token_accepted(authorization: str | None, token: str | None) -> bool:
    """No ATELIER_METRICS_TOKEN: open (development); otherwise `Bearer <token>`, compared in constant time."""
    if not token:
        return True
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


UNAUTHORIZED = "GET /metrics needs Authorization: Bearer <ATELIER_METRICS_TOKEN>"


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus scrapes it with the metrics token (production requires one), not an API key."""
    if not token_accepted(request.headers.get("authorization"), get_settings().metrics_token):
        return JSONResponse({"detail": UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
