"""The one registry of tasks and queues, and the Celery client that sends them after commit.

Senders (the API, core services, the reconciler) and workers (`@app.task(name=...)`) both read TASKS,
so a task name or queue is written once. The API never imports the workers (nor torch): it names tasks.

Sending is at least once and never blocks a commit: messages queued with `send_after_commit` go out
after the transaction that wrote their rows commits. A send that fails is logged and the unit's
`dispatched_at` cleared, so the reconciler re-sends it on its next pass. In the API process
(`send_in_background()`) a thread does the sending, so a hung broker never holds a request.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session

from atelier.core.config import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    queue: str
    # the setting that holds this task's soft time limit, in seconds (the hard one is 60 s more)
    limit_setting: str = "task_soft_time_limit"

    def soft_time_limit(self, settings: Settings) -> int:
        return int(getattr(settings, self.limit_setting))


INGEST = TaskSpec("atelier.ingest", "io")
TRAIN_SEGMENT = TaskSpec("atelier.train_segment", "train")
# a chunk's queue is the generation queue of its job's priority, stored on the unit row
GENERATE_CHUNK = TaskSpec("atelier.generate_chunk", "generate.bulk")
FINALIZE = TaskSpec("atelier.finalize_generation", "io", "finalize_soft_time_limit")
TREND_REPORT = TaskSpec("atelier.trend_report", "io", "trend_soft_time_limit")
DELIVER_WEBHOOK = TaskSpec("atelier.deliver_webhook", "io", "webhook_soft_time_limit")
# the control queue has its own worker: slow webhooks or big finalizes never delay lease recovery
DISPATCH = TaskSpec("atelier.dispatch", "control", "control_soft_time_limit")
RECONCILE = TaskSpec("atelier.reconcile", "control", "control_soft_time_limit")
FIRE_SCHEDULES = TaskSpec("atelier.fire_schedules", "control", "control_soft_time_limit")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        INGEST,
        TRAIN_SEGMENT,
        GENERATE_CHUNK,
        FINALIZE,
        TREND_REPORT,
        DELIVER_WEBHOOK,
        DISPATCH,
        RECONCILE,
        FIRE_SCHEDULES,
    )
}
# work unit kind -> the task that runs it (every such task takes `unit_id`)
UNIT_TASKS: dict[str, TaskSpec] = {
    "ingest": INGEST,
    "train": TRAIN_SEGMENT,
    "chunk": GENERATE_CHUNK,
    "finalize": FINALIZE,
    "webhook": DELIVER_WEBHOOK,
    "trend": TREND_REPORT,
}
QUEUE_OF_PRIORITY = {"interactive": "generate.interactive", "bulk": "generate.bulk"}
QUEUES = ("train", "generate.interactive", "generate.bulk", "io", "control")

_PENDING = "atelier_pending_tasks"


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Bounded socket waits, so that a hung broker raises instead of blocking a sender or a worker."""
    return {
        "visibility_timeout": settings.broker_visibility_timeout,
        "socket_timeout": settings.broker_socket_timeout,
        "socket_connect_timeout": settings.broker_socket_timeout,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 10,
    }


@lru_cache
def celery_client() -> Celery:
    settings = get_settings()
    app = Celery("atelier-client", broker=settings.broker_url)
    app.conf.broker_transport_options = broker_transport_options(settings)
    app.conf.broker_connection_retry_on_startup = True
    # Fail fast when the broker is down: the row is committed and the reconciler re-sends later.
    app.conf.broker_connection_timeout = settings.broker_socket_timeout
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5}
    return app


def send_task(name: str, *, kwargs: dict[str, Any], queue: str) -> None:
    celery_client().send_task(name, kwargs=kwargs, queue=queue, routing_key=queue)


def send_after_commit(
    session: Session, task: TaskSpec, *, kwargs: dict[str, Any], queue: str | None = None
) -> None:
    session.info.setdefault(_PENDING, []).append((task.name, kwargs, queue or task.queue))


class _BackgroundSender:
    """One thread per process that sends what committed transactions left behind."""

    def __init__(self) -> None:
        self.items: stdlib_queue.Queue = stdlib_queue.Queue()
        self.thread = threading.Thread(target=self._run, name="task-sender", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            batch = self.items.get()
            try:
                _send_all(batch)
            finally:
                self.items.task_done()


_background: _BackgroundSender | None = None


def send_in_background() -> None:
    """Sends after commit leave the committing thread (the API: a request never waits on the broker)."""
    global _background
    if _background is None:
        _background = _BackgroundSender()


def wait_for_sends(timeout: float = 5.0) -> None:
    """For tests and the CLI: block until the background sender has drained (bounded)."""
    if _background is not None:
        done = threading.Event()
        threading.Thread(target=lambda: (_background.items.join(), done.set()), daemon=True).start()
        done.wait(timeout)


def _send_or_forget(name: str, kwargs: dict[str, Any], queue: str) -> bool:
    try:
        send_task(name, kwargs=kwargs, queue=queue)
        return True
    except Exception as exc:  # the committed row is what matters; the reconciler re-sends
        log.warning("could not send %s to %s (%s); the reconciler will re-send it", name, queue, exc)
        if "unit_id" in kwargs:
            _mark_undispatched([kwargs["unit_id"]])
        return False


def _send_all(items: list[tuple[str, dict[str, Any], str]]) -> None:
    """Send in order; after the first failure the broker is down: the rest are only marked unsent,
    so a pass over many units costs one timeout, not one per message."""
    for i, (name, kwargs, queue) in enumerate(items):
        if not _send_or_forget(name, kwargs, queue):
            _mark_undispatched([kw["unit_id"] for _, kw, _ in items[i + 1 :] if "unit_id" in kw])
            return


def _mark_undispatched(unit_ids: list[int]) -> None:
    if not unit_ids:
        return
    from sqlalchemy import update

    from atelier.core.db import session_scope
    from atelier.core.models import WorkUnit

    try:
        with session_scope() as session:
            session.execute(
                update(WorkUnit)
                .where(WorkUnit.id.in_(unit_ids), WorkUnit.status == "queued")
                .values(dispatched_at=None)
            )
    except Exception:  # noqa: BLE001 - then they wait for the resend interval instead
        log.debug("could not clear dispatched_at of units %s", unit_ids, exc_info=True)


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    if not pending:
        return
    if _background is not None:
        _background.items.put(pending)
    else:
        _send_all(pending)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
