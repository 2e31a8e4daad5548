"""Running a job under a lease: claim it, heartbeat from a thread, stop on cancel, record the outcome.

    with JobLease.claim(job_id) as lease:        # None when another delivery owns the job
        ... work, calling lease.progress(...) and checking lease.should_stop ...
        lease.succeed(result)

A failure is recorded on the job row before the exception propagates; a soft time limit is recorded
as its own reason.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from core import jobs
from core.config import get_settings
from core.db import session_scope
from core.models import Job

log = logging.getLogger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Cancelled(Exception):
    pass


class JobLease:
    def __init__(self, job_id: str, worker: str):
        self.job_id = job_id
        self.worker = worker
        self.settings = get_settings()
        self.should_stop = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self.settings.heartbeat_seconds):
            try:
                with session_scope() as session:
                    if jobs.heartbeat(session=session, job_id=self.job_id, worker=self.worker):
                        self.should_stop = True
            except Exception:  # a missed beat is harmless; a stale lease is the reconciler's business
                log.exception("heartbeat failed for job %s", self.job_id)

    def progress(self, done: int, total: int | None = None, info: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            if job is None or job.status != jobs.RUNNING or job.worker != self.worker:
                self.should_stop = True
                return
            jobs.set_progress(session=session, job=job, done=done, total=total, info=info)
            if job.cancel_requested:
                self.should_stop = True

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            jobs.add_event(session=session, job_id=self.job_id, kind=kind, message=message, data=data)

    def finish(
        self,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        message: str | None = None,
    ) -> None:
        with session_scope() as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None or job.status != jobs.RUNNING or job.worker != self.worker:
                log.warning("job %s is no longer ours; not recording %s", self.job_id, status)
                return
            jobs.transition(session=session, job=job, to=status, result=result, error=error, message=message)

    def succeed(self, result: dict[str, Any], message: str | None = None) -> None:
        self.finish(jobs.SUCCEEDED, result=result, message=message)

    @classmethod
    @contextmanager
    def claim(cls, job_id: str) -> Iterator[JobLease | None]:
        settings = get_settings()
        worker = worker_identity()
        with session_scope() as session:
            job = jobs.claim(
                session=session, job_id=job_id, worker=worker, stale_after=settings.stale_after_seconds
            )
            if job is not None and job.deliveries > settings.max_deliveries:
                jobs.transition(
                    session=session,
                    job=job,
                    to=jobs.FAILED,
                    error=f"gave up after {job.deliveries - 1} deliveries: the worker died each time",
                )
                job = None
        if job is None:
            log.info("job %s: not claimed (ended, cancelled or owned by a live worker)", job_id)
            yield None
            return
        lease = cls(job_id, worker)
        lease._thread.start()
        try:
            yield lease
        except Cancelled:
            lease.finish(jobs.CANCELLED, message="cancelled while running")
        except SoftTimeLimitExceeded:
            lease.finish(jobs.FAILED, error="time limit exceeded")
            raise
        except Exception as exc:
            lease.finish(jobs.FAILED, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            lease._done.set()
            lease._thread.join(timeout=5)
