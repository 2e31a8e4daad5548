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

A worker whose event loop has stopped turning would fool that check: the loop is what marks a
finished task done, so its request would stay "active" and the worker look busy while messages wait.
So it also asks the loop to run a callback at every check, and a loop that ran none of them for
ATELIER_CONSUMER_STUCK_SECONDS, with the broker reachable, is the same fault. A task in a pool
process that outlives the worker is re-run from its lease, as after any crash: tasks are idempotent.
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

from atelier.core.config import get_settings

log = logging.getLogger("atelier.worker")

# kombu's redis transport keeps a queue's messages of priority p in `name` + this + p (0: the name)
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
GRACE_SECONDS = 5.0  # nothing runs, so a warm shutdown that hangs on the lost connection is cut short


class Watchdog:
    """The check, apart from the thread and the broker, so that it can be tested step by step."""

    def __init__(
        self,
        stuck_seconds: float,
        waiting: Callable[[], int],
        busy: Callable[[], bool],
        loop_turned: Callable[[], bool] | None = None,
    ):
        self.stuck_seconds = stuck_seconds
        self.waiting = waiting
        self.busy = busy
        self.loop_turned = loop_turned  # None: a worker without an event loop (solo, threads)
        self.idle_with_work_since: float | None = None
        self.loop_stuck_since: float | None = None
        self.reason = ""

    def check(self, now: float) -> bool:
        """True once, for `stuck_seconds` with the broker reachable, the worker has been idle with
        messages waiting, or its event loop has run none of the callbacks asked of it."""
        try:
            waiting = self.waiting()  # asked even while busy: it is also the broker's reachability
        except (redis.RedisError, OSError):
            # the broker is away: the consumer reconnects by itself, and its loop waits meanwhile
            self.idle_with_work_since = self.loop_stuck_since = None
            return False
        stuck_now = waiting > 0 and not self.busy()
        loop_stuck = self.loop_turned is not None and not self.loop_turned()
        self.idle_with_work_since = _since(self.idle_with_work_since, stuck_now, now)
        self.loop_stuck_since = _since(self.loop_stuck_since, loop_stuck, now)
        if self.loop_stuck_since is not None and now - self.loop_stuck_since >= self.stuck_seconds:
            self.reason = "its event loop has not turned"
            return True
        if self.idle_with_work_since is not None and now - self.idle_with_work_since >= self.stuck_seconds:
            self.reason = "it has been idle while messages wait"
            return True
        return False


def _since(since: float | None, still: bool, now: float) -> float | None:
    if not still:
        return None
    return now if since is None else since


class LoopProbe:
    """Asks the worker's event loop (kombu's hub) to run a callback; at the next look, tells whether
    it ran any since the last one. The hub's call_soon is safe from another thread and wakes it.

    While the consumer has no connection it is in its own reconnect loop, which holds the event loop
    between attempts (kombu waits up to 30 s between them): that is not judged, and the count starts
    afresh once it is connected."""

    def __init__(self, consumer) -> None:  # noqa: ANN001 - celery's Consumer: .hub and .connection
        self.consumer = consumer
        self.ticks = 0
        self.seen = -1  # -1: the next look asks without judging

    def _tick(self) -> None:
        self.ticks += 1

    def __call__(self) -> bool:
        if self.consumer.connection is None:
            self.seen = -1
            return True
        turned = self.seen < 0 or self.ticks != self.seen
        self.seen = self.ticks
        self.consumer.hub.call_soon(self._tick)
        return turned


def queue_keys(names: list[str]) -> list[str]:
    return [*names, *(f"{name}{PRIORITY_SEPARATOR}{p}" for name in names for p in PRIORITY_STEPS)]


def _busy() -> bool:
    return bool(worker_state.active_requests) or bool(worker_state.reserved_requests)


def _restart(watchdog: Watchdog, queues: list[str]) -> None:
    log.error(
        "for %.0f s %s (queues %s): the broker consumer is lost; stopping so that the supervisor "
        "starts a fresh worker (ATELIER_CONSUMER_STUCK_SECONDS)",
        watchdog.stuck_seconds,
        watchdog.reason,
        ", ".join(queues),
    )
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os._exit(70)  # EX_SOFTWARE: the warm shutdown itself hung


def _run(queues: list[str], stuck_seconds: float, consumer) -> None:  # noqa: ANN001
    settings = get_settings()
    client = redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=settings.broker_socket_timeout,
        socket_connect_timeout=settings.broker_socket_timeout,
    )
    keys = queue_keys(queues)
    watchdog = Watchdog(
        stuck_seconds,
        waiting=lambda: sum(client.llen(k) for k in keys),
        busy=_busy,
        loop_turned=LoopProbe(consumer) if getattr(consumer, "hub", None) is not None else None,
    )
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
    threading.Thread(
        target=_run, args=(queues, stuck_seconds, sender), name="consumer-watchdog", daemon=True
    ).start()
