"""The Celery app: queues, routes, beat and the reliability settings.

Queues (atelier.core.queue.TASKS names each task's): `train` and `generate.interactive` / `generate.bulk` for
GPU workers, `io` for CPU work (ingest, finalize, webhooks), `control` for the reconciler, dispatch and
schedules, on a worker of its own so that slow io work never delays lease recovery.

Delivery is at least once: a message is acknowledged only
after its task ends (acks_late), a worker process killed mid-task puts its message back
(reject_on_worker_lost), and each worker process reserves one message at a time (prefetch 1), so a
slow chunk never holds others hostage. Every task re-reads its row and is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

from atelier.core.config import get_settings
from atelier.core.db import dispose_engine
from atelier.core.queue import FIRE_SCHEDULES, QUEUES, RECONCILE, TaskSpec, broker_transport_options
from atelier.workers import consumer_watchdog as _watchdog  # noqa: F401 - a worker that lost its consumer restarts
from atelier.workers import metrics as _metrics  # noqa: F401 - Celery signals: worker metrics and log context

TASK_MODULES = [
    "atelier.catalogue.tasks",
    "atelier.workers.reconcile",
    "atelier.generation.tasks",
    "atelier.generation.finalize",
    "atelier.training.tasks",
    "atelier.training.schedule_tasks",
    "atelier.webhooks.tasks",
    "atelier.trends.tasks",
]


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("atelier", broker=settings.broker_url, include=TASK_MODULES)
    app.conf.update(
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_default_queue="io",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        # A message unacked for this long is handed to another worker; every task's hard time limit
        # stays below it, so a healthy task is never delivered twice by the broker.
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        # a worker or beat whose broker restarts or hangs reconnects by itself, however long it takes
        broker_connection_max_retries=None,
        broker_connection_timeout=settings.broker_socket_timeout,
        task_ignore_result=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_max_tasks_per_child=200,
        beat_schedule={
            "fire-schedules": {
                "task": FIRE_SCHEDULES.name,
                "schedule": settings.schedule_tick_seconds,
                "options": {"queue": FIRE_SCHEDULES.queue, "expires": settings.schedule_tick_seconds * 3},
            },
            "reconcile": {
                "task": RECONCILE.name,
                "schedule": settings.reconcile_every_seconds,
                "options": {"queue": RECONCILE.queue, "expires": settings.reconcile_every_seconds * 3},
            },
        },
        timezone="UTC",
    )
    return app


app = make_app()


def task(spec: TaskSpec, **options) -> Callable:
    """`@app.task` from the registry: the name, queue and time limits of atelier.core.queue.TASKS."""
    soft = spec.soft_time_limit(get_settings())
    return app.task(
        name=spec.name,
        queue=spec.queue,
        acks_late=True,
        soft_time_limit=soft,
        time_limit=soft + 60,
        **options,
    )


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked pool process must not share the parent's SQL connections.
    dispose_engine()
