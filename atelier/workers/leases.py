"""The one lease helper: every task that runs a unit of queued work (atelier.core.units) runs it under this.

    with lease_unit(unit_id) as lease:       # None when another delivery owns it, or it has ended
        ... work: lease.sql(fn), lease.event(...), lease.progress(...), checking lease.should_stop ...
        lease.succeed(then=lambda session: ...)     # or lease.finish(...), or just return (succeeded)

A thread heartbeats the unit; a failed beat is retried every second, so a database that comes back is
heard from at once. How the block ends decides what becomes of the unit:

    returns                       succeeded (unless the body ended it itself)
    raises Cancelled              cancelled (the job's cancel was asked)
    raises StepAside              back in line at once, no delivery used (a bulk chunk yields)
    raises an infrastructure      back in line after a backoff, no delivery used: S3, SQL or the
      fault (atelier.core.faults)         broker being down is not the job's fault
    raises anything else          the job's own error: retried while the kind allows (a chunk up to
                                  ATELIER_MAX_DELIVERIES, a finalize up to ATELIER_FINALIZE_MAX_ATTEMPTS),
                                  then failed with the reason; re-raised for the worker's log
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from atelier.core import jobs, units
from atelier.core.config import Settings, get_settings
from atelier.core.db import session_scope
from atelier.core.faults import InfrastructureUnavailable, is_infrastructure, retrying
from atelier.core.models import Job

log = logging.getLogger(__name__)
T = TypeVar("T")


_identity: tuple[int, str] | None = None


def worker_identity() -> str:
    """`host:pid:token`, the lease owner's name: the host says where the work runs (hosts share one
    database), the pid which process, and a random token tells apart a process that reuses a pid (in a
    restarted container every worker may be pid 7). A forked child gets an identity of its own."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(6)}")
    return _identity[1]


class Cancelled(Exception):
    pass


class StepAside(Exception):
    """Give the unit back at once, without using a delivery (a bulk chunk making way)."""


def own_attempts(kind: str, settings: Settings) -> int:
    """How many tries a unit gets for errors of its own (not infrastructure faults)."""
    return {"chunk": settings.max_deliveries, "finalize": settings.finalize_max_attempts}.get(kind, 1)


class Lease:
    def __init__(self, unit: units.Claimed, settings: Settings):
        self.unit = unit
        self.settings = settings
        self.stopped = threading.Event()  # cancel asked or lease lost
        self.ended = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{unit.id}", daemon=True)

    @property
    def job_id(self) -> str:
        return self.unit.job_id

    @property
    def params(self) -> dict[str, Any]:
        return self.unit.job_params

    @property
    def should_stop(self) -> bool:
        return self.stopped.is_set()

    def _beat(self) -> None:
        wait = self.settings.heartbeat_seconds
        while not self._done.wait(wait):
            try:
                with session_scope() as session:
                    if units.heartbeat(session=session, unit_id=self.unit.id, worker=self.unit.worker):
                        self.stopped.set()
                wait = self.settings.heartbeat_seconds
            except Exception as exc:  # noqa: BLE001 - keep trying: the lease is fenced, not lost, yet
                log.warning("heartbeat of unit %s failed (%s); retrying", self.unit.id, type(exc).__name__)
                wait = min(1.0, self.settings.heartbeat_seconds)

    # ---- SQL with infrastructure retries -----------------------------------------------------
    def sql(self, fn: Callable[[Session], T], *, what: str = "database write") -> T:
        """Run fn in its own short transaction, retrying database faults for up to
        ATELIER_INFRA_RETRY_SECONDS (the lease stays ours meanwhile: writes are fenced)."""

        def attempt() -> T:
            with session_scope() as session:
                return fn(session)

        return retrying(
            attempt,
            what=f"{what} for unit {self.unit.id}",
            deadline=self.settings.infra_retry_seconds,
            cap=self.settings.retry_backoff_max_seconds,
        )

    def retrying(self, fn: Callable[[], T], *, what: str) -> T:
        """Retry an S3 or broker call through its faults, as `sql` does for the database."""
        return retrying(
            fn,
            what=what,
            deadline=self.settings.infra_retry_seconds,
            cap=self.settings.retry_backoff_max_seconds,
        )

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.sql(
            lambda s: jobs.add_event(session=s, job_id=self.job_id, kind=kind, message=message, data=data)
        )

    def progress(self, done: int, total: int | None = None, info: dict[str, Any] | None = None) -> None:
        """Job progress of a single-unit-at-a-time job (ingest, training): the lease holder is its only
        writer. Fenced: a lease that went to another worker stops this one."""

        def write(session: Session) -> None:
            if not units.set_done(session=session, unit_id=self.unit.id, worker=self.unit.worker, done=done):
                self.stopped.set()
                return
            job = session.get(Job, self.job_id)
            if job is None or job.status != jobs.RUNNING:
                self.stopped.set()
                return
            jobs.set_progress(session=session, job=job, done=done, total=total, info=info)
            if job.cancel_requested:
                self.stopped.set()

        self.sql(write, what="progress")

    # ---- ending the unit ----------------------------------------------------------------------
    def finish(
        self, status: str, *, error: str | None = None, then: Callable[[Session, Job], None] | None = None
    ) -> bool:
        """End the unit; `then(session, job)` runs in the same transaction (end the job, add the next
        segment). False when the lease was no longer ours: nothing is recorded."""

        def write(session: Session) -> bool:
            unit = units.finish(
                session=session, unit_id=self.unit.id, worker=self.unit.worker, status=status, error=error
            )
            if unit is None:
                log.warning("unit %s is no longer ours; not recording %s", self.unit.id, status)
                return False
            if then is not None:
                job = session.get(Job, self.job_id, with_for_update=True)
                if job is not None and job.status not in jobs.TERMINAL:
                    then(session, job)
            return True

        self.ended = True
        return self.sql(write, what=f"finishing ({status})")

    def succeed(self, then: Callable[[Session, Job], None] | None = None) -> bool:
        return self.finish(units.SUCCEEDED, then=then)

    def give_back(self, reason: str, *, count_attempt: bool = True, delay: float | None = None) -> bool:
        self.ended = True
        return self.sql(
            lambda s: units.give_back(
                session=s,
                unit_id=self.unit.id,
                worker=self.unit.worker,
                reason=reason,
                settings=self.settings,
                count_attempt=count_attempt,
                delay=delay,
            ),
            what="giving back",
        )

    def fail_or_retry(self, reason: str) -> None:
        """An error of the job's own: try again while the kind allows, then fail the unit."""
        if self.unit.attempts + 1 < own_attempts(self.unit.kind, self.settings):
            self.give_back(reason)
            self.event(
                f"{self.unit.kind}_retried",
                f"{units.describe(self.unit)} will be retried: {reason}",
                {"unit": self.unit.id, "attempt": self.unit.attempts + 1},
            )
        else:
            self.finish(units.FAILED, error=reason)
            self.event(
                f"{self.unit.kind}_failed",
                f"{units.describe(self.unit)} failed: {reason}",
                {"unit": self.unit.id, "attempt": self.unit.attempts + 1},
            )


def _claim(unit_id: int, settings: Settings) -> units.Claimed | None:
    worker = worker_identity()

    def attempt() -> units.Claimed | None:
        with session_scope() as session:
            return units.claim(session=session, unit_id=unit_id, worker=worker, settings=settings)

    return retrying(attempt, what=f"claiming unit {unit_id}", deadline=settings.infra_retry_seconds)


def short_reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def lease_unit(unit_id: int) -> Iterator[Lease | None]:
    settings = get_settings()
    unit = _claim(unit_id, settings)
    if unit is None:
        log.info("unit %s: not claimed (ended, cancelled or owned by a live worker)", unit_id)
        yield None
        return
    lease = Lease(unit, settings)
    lease._thread.start()
    try:
        yield lease
        if not lease.ended:
            lease.succeed()
    except Cancelled:
        lease.finish(units.CANCELLED)
    except StepAside as exc:
        lease.give_back(str(exc) or "stepped aside", count_attempt=False, delay=0)
    except SoftTimeLimitExceeded:
        lease.fail_or_retry("time limit exceeded")
    except Exception as exc:
        if isinstance(exc, InfrastructureUnavailable) or is_infrastructure(exc):
            # not the job's fault: back in line after a backoff, no delivery used, nothing re-raised
            reason = short_reason(exc)
            log.warning("unit %s: infrastructure fault (%s); giving it back", unit_id, reason)
            lease.give_back(f"infrastructure: {reason}")
            lease.event(
                "delayed",
                f"{units.describe(unit)} delayed by an infrastructure fault ({reason}); it will be retried",
                {"unit": unit.id, "attempt": unit.attempts + 1},
            )
            return
        lease.fail_or_retry(short_reason(exc))
        raise
    finally:
        lease._done.set()
        lease._thread.join(timeout=5)
