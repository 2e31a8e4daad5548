"""A worker that is idle while its queues hold messages has lost its consumer: it restarts itself.

Measured here (celery and kombu 5.7, redis-py 8.1): after the broker hung for 5 s and was restarted,
every worker's event loop kept running and answered `celery inspect ping`, but none of them read its
queues again, and none logged a lost connection; work piled up until the processes were restarted.
The same failure is reported upstream in several forms (celery#8030, #9054, #10205, #10302), so this
does not depend on which path caused it. It watches the one symptom that matters:

    no task active or reserved in this worker  AND  messages waiting in a queue it consumes
    at every check for ATELIER_CONSUMER_STUCK_SECONDS

and then stops the worker warmly (nothing is running, so nothing is lost or redone) and leaves the
restart to its supervisor: the embedded stack's, or compose's `restart: unless-stopped`. A broker it
cannot reach is not this fault (the consumer's own reconnect handles that) and resets the clock.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import redis
from celery.signals import worker_ready
from celery.worker import state as worker_state

from core.config import get_settings

log = logging.getLogger("atelier.worker")

# kombu's redis transport keeps a queue's messages of priority p in `name` + this + p (0: the name)
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
GRACE_SECONDS = 5.0  # nothing runs, so a warm shutdown that hangs on the lost connection is cut short


class Watchdog:
    """The check, apart from the thread and the broker, so that it can be tested step by step."""

    def __init__(self, stuck_seconds: float, waiting: Callable[[], int], busy: Callable[[], bool]):
        self.stuck_seconds = stuck_seconds
        self.waiting = waiting
        self.busy = busy
        self.idle_with_work_since: float | None = None

    def check(self, now: float) -> bool:
        """True once the worker has been idle with messages waiting for `stuck_seconds`."""
        try:
            stuck_now = not self.busy() and self.waiting() > 0
        except (redis.RedisError, OSError):
            stuck_now = False  # the broker is away: the consumer reconnects by itself
        if not stuck_now:
            self.idle_with_work_since = None
            return False
        if self.idle_with_work_since is None:
            self.idle_with_work_since = now
        return now - self.idle_with_work_since >= self.stuck_seconds


def queue_keys(names: list[str]) -> list[str]:
    return [*names, *(f"{name}{PRIORITY_SEPARATOR}{p}" for name in names for p in PRIORITY_STEPS)]


def _busy() -> bool:
    return bool(worker_state.active_requests) or bool(worker_state.reserved_requests)


def _restart(watchdog: Watchdog, queues: list[str]) -> None:
    log.error(
        "idle for %.0f s while messages wait in %s: the broker consumer is lost; stopping so that the "
        "supervisor starts a fresh worker (ATELIER_CONSUMER_STUCK_SECONDS)",
        watchdog.stuck_seconds,
        ", ".join(queues),
    )
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os._exit(70)  # EX_SOFTWARE: the warm shutdown itself hung


def _run(queues: list[str], stuck_seconds: float) -> None:
    settings = get_settings()
    client = redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=settings.broker_socket_timeout,
        socket_connect_timeout=settings.broker_socket_timeout,
    )
    keys = queue_keys(queues)
    watchdog = Watchdog(stuck_seconds, waiting=lambda: sum(client.llen(k) for k in keys), busy=_busy)
    every = max(1.0, stuck_seconds / 6)  # the verdict comes at most `every` after stuck_seconds
    while True:
        time.sleep(every)
        try:
            stuck = watchdog.check(time.monotonic())
        except Exception:  # a watchdog that dies silently watches nothing: log it and look again
            log.exception("consumer watchdog check failed")
            continue
        if stuck:
            _restart(watchdog, queues)
            return


_started = threading.Event()


@worker_ready.connect
def _start(sender, **_kwargs) -> None:  # noqa: ANN001 - the worker's Consumer
    stuck_seconds = get_settings().consumer_stuck_seconds
    if _started.is_set() or not stuck_seconds or not get_settings().broker_url.startswith("redis"):
        return  # worker_ready comes again after a reconnect: one watchdog per process
    _started.set()
    queues = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    threading.Thread(target=_run, args=(queues, stuck_seconds), name="consumer-watchdog", daemon=True).start()
