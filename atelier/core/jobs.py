"""Job states, legal transitions, progress and events.

    queued ──start──> running ──> succeeded | partially_succeeded | failed | cancelled
      │
      └─> cancelled | failed

A job's queued work (ingest run, training segments, generation chunks, finalize, webhook) lives in
atelier.core.units, which holds the leases, counts deliveries and re-queues the work of dead workers; the job
row holds the user-visible state, which changes only through `transition` (and `start`, the
conditional form of queued -> running). Every service is keyword-only and takes the session; callers
commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from atelier.core.models import Job, JobEvent, utcnow

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
PARTIALLY_SUCCEEDED = "partially_succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

STATES = (QUEUED, RUNNING, SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED})
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED}),
    **{state: frozenset() for state in TERMINAL},
}
KINDS = ("ingest", "train", "generate", "trend")


class IllegalTransition(Exception):
    def __init__(self, job_id: str, current: str, target: str):
        super().__init__(f"job {job_id} cannot go from {current} to {target}")
        self.current, self.target = current, target


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def create_job(
    *,
    session: Session,
    kind: str,
    params: dict[str, Any],
    total: int = 0,
    priority: str = "bulk",
    api_key_id: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Job:
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")
    job = Job(
        kind=kind,
        status=QUEUED,
        params=params,
        progress_total=total,
        priority=priority,
        api_key_id=api_key_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    session.add(job)
    session.flush()
    add_event(session=session, job_id=job.id, kind="created", message=f"{kind} job queued")
    return job


def add_event(
    *, session: Session, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None
) -> JobEvent:
    event = JobEvent(job_id=job_id, kind=kind, message=message, data=data)
    session.add(event)
    return event


def transition(
    *,
    session: Session,
    job: Job,
    to: str,
    message: str | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> Job:
    if not can_transition(job.status, to):
        raise IllegalTransition(job.id, job.status, to)
    now = utcnow()
    previous = job.status
    job.status = to
    if to == RUNNING and job.started_at is None:
        job.started_at = now
    if to in TERMINAL:
        job.finished_at = now
        job.eta_seconds = None
    if result is not None:
        job.result = result
    if error is not None:
        job.error = error
    add_event(
        session=session,
        job_id=job.id,
        kind=to,
        message=message or f"{previous} -> {to}",
        data={"from": previous, "to": to},
    )
    return job


def start(*, session: Session, job_id: str, worker: str) -> bool:
    """queued -> running when a job's first unit is claimed: one conditional UPDATE, so of two units
    claimed at once on two workers exactly one records the start."""
    now = utcnow()
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == QUEUED)
        .values(status=RUNNING, started_at=func.coalesce(Job.started_at, now))
        .execution_options(synchronize_session=False)
    ).rowcount
    if won == 1:
        add_event(
            session=session,
            job_id=job_id,
            kind=RUNNING,
            message=f"started on {worker}",
            data={"from": QUEUED, "to": RUNNING, "worker": worker},
        )
    return won == 1


def note_deliveries(*, session: Session, job_id: str, deliveries: int) -> None:
    """The job shows the most deliveries any of its units needed (1 unless a worker died)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.deliveries < deliveries)
        .values(deliveries=deliveries)
        .execution_options(synchronize_session=False)
    )


def raise_progress(*, session: Session, job_id: str, done: int, now: datetime | None = None) -> None:
    """Progress counted from what exists, written only upward (two chunks reporting at once cannot
    move it back); the ETA is the remaining work at the average rate since the job started."""
    now = now or utcnow()
    row = session.execute(select(Job.started_at, Job.progress_total).where(Job.id == job_id)).one_or_none()
    if row is None:
        return
    eta = None
    if row.started_at is not None and done > 0:
        elapsed = (now - row.started_at).total_seconds()
        eta = max(row.progress_total - done, 0) * elapsed / done
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == RUNNING, Job.progress_done < done)
        .values(progress_done=done, eta_seconds=eta)
        .execution_options(synchronize_session=False)
    )


def set_progress(
    *,
    session: Session,
    job: Job,
    done: int,
    total: int | None = None,
    info: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Record progress as counted from what exists; the ETA comes from a smoothed recent rate."""
    now = now or utcnow()
    if total is not None:
        job.progress_total = total
    previous = dict(job.progress_info or {})
    last_at, last_done = previous.get("_at"), previous.get("_done")
    rate = previous.get("rate")
    if last_at is not None and last_done is not None:
        dt = now.timestamp() - last_at
        if dt > 0 and done >= last_done:
            instant = (done - last_done) / dt
            rate = instant if rate is None else 0.7 * rate + 0.3 * instant
    merged = {**previous, **(info or {}), "_at": now.timestamp(), "_done": done}
    if rate is not None:
        merged["rate"] = rate
    job.progress_info = merged
    job.progress_done = done
    remaining = max(job.progress_total - done, 0)
    job.eta_seconds = (remaining / rate) if rate and rate > 0 else None
