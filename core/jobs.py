"""Job states, legal transitions, claims, heartbeats, progress and events.

    queued ──claim──> running ──> succeeded | partially_succeeded | failed | cancelled
      │                 │
      └─> cancelled     └─> queued   (only when the worker died and the work is re-delivered)

Every service is keyword-only and takes the session; callers commit. A claim is one conditional
UPDATE, so of two deliveries of the same message exactly one wins; a running job whose heartbeat is
stale may be claimed again (its worker died), and `deliveries` counts claims so that a job which keeps
killing its workers fails instead of looping forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.models import Job, JobEvent, utcnow

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
    RUNNING: frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED, QUEUED}),
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
    if to == QUEUED:
        job.worker = None
        job.heartbeat_at = None
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


def claim(*, session: Session, job_id: str, worker: str, stale_after: float) -> Job | None:
    """Take a queued job, a running one released by its last task, or one whose worker stopped
    heartbeating, in one UPDATE.

    Returns the claimed job, or None when another delivery owns it or it has ended."""
    now = utcnow()
    stale_before = now - timedelta(seconds=stale_after)
    row = session.execute(select(Job.status, Job.started_at).where(Job.id == job_id)).one_or_none()
    if row is None:
        return None
    result = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .where(
            or_(
                Job.status == QUEUED,
                (Job.status == RUNNING)
                & or_(Job.worker.is_(None), Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before),
            )
        )
        .values(
            status=RUNNING,
            worker=worker,
            heartbeat_at=now,
            started_at=row.started_at or now,
            deliveries=Job.deliveries + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    message = "started" if job.deliveries == 1 else f"re-delivered (delivery {job.deliveries})"
    add_event(
        session=session,
        job_id=job_id,
        kind="running",
        message=f"{message} on {worker}",
        data={"from": row.status, "to": RUNNING, "delivery": job.deliveries, "worker": worker},
    )
    return job


def release_lease(*, session: Session, job: Job) -> None:
    """Hand a running job over to its next task (a training segment): the next claim takes it at once,
    and its delivery count starts again; until then the reconciler sees a fresh heartbeat."""
    job.worker = None
    job.heartbeat_at = utcnow()
    job.deliveries = 0


def heartbeat(*, session: Session, job_id: str, worker: str) -> bool:
    """Refresh the lease; returns True when the job should stop (cancel asked, or lease lost)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == RUNNING, Job.worker == worker)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return True
    return bool(session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one())


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
    job.heartbeat_at = now


def request_cancel(*, session: Session, job: Job) -> Job:
    """Queued jobs end now; running ones are asked to stop at their next step, batch or segment."""
    if job.status in TERMINAL:
        raise IllegalTransition(job.id, job.status, CANCELLED)
    if job.status == QUEUED:
        return transition(session=session, job=job, to=CANCELLED, message="cancelled before it started")
    job.cancel_requested = True
    add_event(session=session, job_id=job.id, kind="cancel_requested", message="cancel requested")
    return job


def stale_running_jobs(
    *, session: Session, stale_after: float, waiting_after: float | None = None
) -> list[Job]:
    """Running jobs whose worker stopped heartbeating. A job released between two tasks (a training
    segment waiting in its queue, no worker) is only presumed lost after `waiting_after`: a busy GPU
    queue is not a dead worker."""
    now = utcnow()
    before = now - timedelta(seconds=stale_after)
    waiting_before = now - timedelta(seconds=waiting_after if waiting_after is not None else stale_after)
    return list(
        session.scalars(
            select(Job).where(
                Job.status == RUNNING,
                or_(
                    Job.heartbeat_at.is_(None),
                    Job.worker.is_not(None) & (Job.heartbeat_at < before),
                    Job.worker.is_(None) & (Job.heartbeat_at < waiting_before),
                ),
            )
        )
    )


def undispatched_jobs(*, session: Session, resend_after: float) -> list[Job]:
    """Queued jobs whose message may be lost: never sent, or sent long ago and still not claimed."""
    before = utcnow() - timedelta(seconds=resend_after)
    return list(
        session.scalars(
            select(Job).where(
                Job.status == QUEUED, or_(Job.dispatched_at.is_(None), Job.dispatched_at < before)
            )
        )
    )
