"""The one leased-work core: every unit of queued work is created, sent, claimed, heartbeated, finished
and reconciled here, whatever its kind.

    kinds      ingest (one per ingest job), train (one per segment), chunk (a slice of a generation
               job's indices), finalize (one per generation job), webhook (the outbox: one per ended
               job with a webhook_url)

    queued ──claim──> running ──finish──> succeeded | failed | cancelled
      ^                 │ heartbeat (fenced by worker id; True: stop - cancel asked or lease lost)
      ├── give_back ────┤ an infrastructure fault outlasted its retries, or a bulk chunk yields:
      │                 │ back in line after a backoff; deliveries are not used up
      └── reconcile ────┘ heartbeat stale twice over (suspected, then confirmed a pass later):
                          re-queued, or failed after ATELIER_MAX_DELIVERIES

    after a unit ends: a chunk that leaves none open adds the finalize unit; a failed or cancelled
    ingest/train unit ends its job; a failed finalize ends its job `failed`; the job's terminal
    transition (end_job) adds the webhook unit in the same transaction (an outbox: a webhook survives
    a broker outage or a kill between commit and publish).

Every write of a lease holder is fenced: `WHERE worker = me AND status = 'running'`. A unit's message is
sent after the commit that created or re-queued it; a lost message (dispatched_at cleared by a failed
send, or overdue) is re-sent by the reconciler. Services are keyword-only and take the session;
callers commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atelier.core import jobs
from atelier.core import queue as task_queue
from atelier.core.config import Settings
from atelier.core.dbclock import db_now, db_time
from atelier.core.faults import backoff
from atelier.core.models import Job, WorkUnit, utcnow
from atelier.core.queue import DISPATCH, QUEUE_OF_PRIORITY, UNIT_TASKS, send_after_commit

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
OPEN = (QUEUED, RUNNING)
KINDS = ("ingest", "train", "chunk", "finalize", "webhook", "trend")
# the units that are the job's work (a webhook is not: it follows the job's end)
_JOB_WORK = ("ingest", "train", "chunk", "finalize", "trend")
# the units a cancel stops; a finalize still runs, to record what the cancelled job made
_CANCELLABLE = ("ingest", "train", "chunk", "trend")


@dataclass
class Claimed:
    """What a worker needs of a claimed unit (a plain copy: no session is held while it works)."""

    id: int
    job_id: str
    kind: str
    seq: int
    spec: dict[str, Any]
    deliveries: int
    attempts: int
    worker: str
    job_params: dict[str, Any]
    priority: str


# ---------------------------------------------------------------- creating and sending


def add_unit(
    *, session: Session, job: Job, kind: str, seq: int = 0, spec: dict | None = None, send: bool = True
) -> WorkUnit:
    if kind not in KINDS:
        raise ValueError(f"unknown unit kind {kind!r}")
    queue = (
        QUEUE_OF_PRIORITY.get(job.priority, "generate.bulk") if kind == "chunk" else UNIT_TASKS[kind].queue
    )
    unit = WorkUnit(job_id=job.id, kind=kind, seq=seq, queue=queue, status=QUEUED, spec=spec or {})
    session.add(unit)
    session.flush()
    if send:
        send_unit(session, unit)
    return unit


def add_unit_once(*, session: Session, job: Job, kind: str, seq: int = 0) -> WorkUnit | None:
    """Add (job, kind, seq) unless it exists; returns the new unit, or None when it was there."""
    if _find(session, job.id, kind, seq) is not None:
        return None
    try:
        with session.begin_nested():
            unit = add_unit(session=session, job=job, kind=kind, seq=seq, send=False)
    except IntegrityError:  # a concurrent writer added it first
        return None
    send_unit(session, unit)
    return unit


def _find(session: Session, job_id: str, kind: str, seq: int) -> WorkUnit | None:
    return session.scalars(
        select(WorkUnit).where(WorkUnit.job_id == job_id, WorkUnit.kind == kind, WorkUnit.seq == seq)
    ).one_or_none()


def send_unit(session: Session, unit: WorkUnit) -> None:
    unit.dispatched_at = db_now()
    send_after_commit(session, UNIT_TASKS[unit.kind], kwargs={"unit_id": unit.id}, queue=unit.queue)


def start_work(session: Session, job: Job) -> WorkUnit:
    """The first unit of a new ingest or training job, sent after the commit."""
    first = {"ingest": "ingest", "train": "train", "trend": "trend"}[job.kind]
    return add_unit(session=session, job=job, kind=first, seq=0)


def dispatch_new_job(session: Session, job: Job) -> None:
    """A submit sends at most one message: the single unit itself, or one `dispatch` task that sends
    a many-unit job's units from a worker (never thousands of messages from the request thread)."""
    fresh = list(
        session.scalars(
            select(WorkUnit).where(
                WorkUnit.job_id == job.id, WorkUnit.status == QUEUED, WorkUnit.dispatched_at.is_(None)
            )
        )
    )
    if len(fresh) == 1:
        send_unit(session, fresh[0])
    elif fresh:
        send_after_commit(session, DISPATCH, kwargs={"job_id": job.id})


def dispatch_units(*, session: Session, job_id: str | None = None, limit: int = 2000) -> int:
    """Send queued units that have no live message (never sent, a failed send, a backoff that ended).
    Each is sent before it is marked, so a crash in between re-sends it (a duplicate is turned away by
    the claim). The first failed send stops the pass: the broker is down, the reconciler tries again."""
    stmt = select(WorkUnit).where(
        WorkUnit.status == QUEUED,
        WorkUnit.dispatched_at.is_(None),
        or_(WorkUnit.not_before.is_(None), WorkUnit.not_before <= db_now()),
    )
    if job_id is not None:
        stmt = stmt.where(WorkUnit.job_id == job_id)
    sent = 0
    for unit in session.scalars(stmt.order_by(WorkUnit.id).limit(limit)):
        try:
            task_queue.send_task(UNIT_TASKS[unit.kind].name, kwargs={"unit_id": unit.id}, queue=unit.queue)
        except Exception:  # noqa: BLE001 - the broker is down; nothing is lost, the rows wait
            break
        unit.dispatched_at = db_now()
        sent += 1
    return sent


# ---------------------------------------------------------------- leases


def claim(*, session: Session, unit_id: int, worker: str, settings: Settings) -> Claimed | None:
    """Take a queued unit (or a running one whose lease is stale) in one conditional UPDATE: of two
    deliveries exactly one wins. A unit of an ended or cancelled job is cancelled instead."""
    unit = session.get(WorkUnit, unit_id)
    if unit is None or unit.status not in OPEN:
        return None
    # the job row first, as cancel does (api/routes/jobs.py locks it, then its units): on PostgreSQL
    # the two never wait for each other in opposite orders
    job = session.get(Job, unit.job_id, with_for_update=True)
    if job is None:
        return None
    if (unit.kind in _CANCELLABLE and job.cancel_requested) or (
        unit.kind in _JOB_WORK and job.status in jobs.TERMINAL
    ):
        if unit.status == QUEUED:
            unit.status, unit.finished_at = CANCELLED, utcnow()
            after_end(session=session, unit=unit, job=job)
        return None
    # both times are the database's, computed in the UPDATE: a worker's own clock never decides
    # whether a lease is stale (atelier.core.dbclock)
    now, stale_before = db_now(), db_now(-settings.stale_after_seconds)
    confirm_before = db_now(-_confirm_seconds(settings).total_seconds())
    won = session.execute(
        update(WorkUnit)
        .where(WorkUnit.id == unit_id)
        .where(
            or_(
                WorkUnit.status == QUEUED,
                # a running unit only after the reconciler's two steps: stale, suspected, and still
                # silent a pass later (a late heartbeat clears the suspicion), as reconcile() demands
                and_(
                    WorkUnit.status == RUNNING,
                    or_(WorkUnit.heartbeat_at.is_(None), WorkUnit.heartbeat_at < stale_before),
                    WorkUnit.suspected_at.is_not(None),
                    WorkUnit.suspected_at < confirm_before,
                ),
            )
        )
        .values(
            status=RUNNING,
            worker=worker,
            heartbeat_at=now,
            suspected_at=None,
            not_before=None,
            started_at=func.coalesce(WorkUnit.started_at, now),
            deliveries=WorkUnit.deliveries + 1,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        return None
    session.refresh(unit)
    label = describe(unit)
    if unit.deliveries > settings.max_deliveries:
        _give_up(session, unit, f"gave up after {unit.deliveries - 1} deliveries: the worker died each time")
        after_end(session=session, unit=unit, job=job)
        return None
    if unit.kind in _JOB_WORK:
        jobs.start(session=session, job_id=job.id, worker=worker)
        jobs.note_deliveries(session=session, job_id=job.id, deliveries=unit.deliveries)
    if unit.deliveries > 1:
        jobs.add_event(
            session=session,
            job_id=job.id,
            kind="redelivered",
            message=f"{label} re-delivered (delivery {unit.deliveries}) on {worker}",
            data={"unit": unit.id, "kind": unit.kind, "seq": unit.seq, "delivery": unit.deliveries},
        )
    return Claimed(
        id=unit.id,
        job_id=job.id,
        kind=unit.kind,
        seq=unit.seq,
        spec=dict(unit.spec or {}),
        deliveries=unit.deliveries,
        attempts=unit.attempts,
        worker=worker,
        job_params=dict(job.params or {}),
        priority=job.priority,
    )


def _give_up(session: Session, unit: WorkUnit, error: str) -> None:
    """A unit whose workers keep dying ends failed, with an event; the caller runs after_end."""
    unit.status, unit.finished_at, unit.error = FAILED, utcnow(), error
    jobs.add_event(
        session=session,
        job_id=unit.job_id,
        kind=f"{unit.kind}_failed",
        message=f"{describe(unit)} failed: {error}",
        data={"unit": unit.id, "kind": unit.kind, "seq": unit.seq},
    )


def describe(unit: WorkUnit | Claimed) -> str:
    return {
        "chunk": f"chunk {unit.seq}",
        "train": f"training segment {unit.seq + 1}",
    }.get(unit.kind, unit.kind)


def _fenced(unit_id: int, worker: str):  # noqa: ANN202
    return update(WorkUnit).where(
        WorkUnit.id == unit_id, WorkUnit.worker == worker, WorkUnit.status == RUNNING
    )


def heartbeat(*, session: Session, unit_id: int, worker: str) -> bool:
    """Renew the lease; True when the unit should stop (its job's cancel was asked, or it ended, or the
    lease went to another worker)."""
    won = session.execute(
        _fenced(unit_id, worker)
        .values(heartbeat_at=db_now(), suspected_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        return True
    row = session.execute(
        select(Job.cancel_requested, Job.status, WorkUnit.kind)
        .join(WorkUnit, WorkUnit.job_id == Job.id)
        .where(WorkUnit.id == unit_id)
    ).one()
    if row.kind in _CANCELLABLE and row.cancel_requested:
        return True
    return row.kind in _JOB_WORK and row.status in jobs.TERMINAL


def set_done(*, session: Session, unit_id: int, worker: str, done: int) -> bool:
    """Record how much of the unit exists (fenced); False when the lease is no longer ours."""
    return (
        session.execute(
            _fenced(unit_id, worker)
            .values(done=done, heartbeat_at=db_now(), suspected_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def set_spec(*, session: Session, unit_id: int, worker: str, spec: dict[str, Any]) -> bool:
    return (
        session.execute(
            _fenced(unit_id, worker).values(spec=spec).execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def finish(
    *, session: Session, unit_id: int, worker: str, status: str, error: str | None = None
) -> WorkUnit | None:
    """End our lease with `status`; returns the unit, or None when it was no longer ours (then nothing
    is recorded: the new holder decides)."""
    won = session.execute(
        _fenced(unit_id, worker)
        .values(status=status, finished_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        return None
    unit = session.get(WorkUnit, unit_id, populate_existing=True)
    job = session.get(Job, unit.job_id, with_for_update=True)
    if job is not None:
        after_end(session=session, unit=unit, job=job)
    return unit


def give_back(
    *,
    session: Session,
    unit_id: int,
    worker: str,
    reason: str,
    settings: Settings,
    count_attempt: bool = True,
    delay: float | None = None,
) -> bool:
    """Put a running unit back in line without using up a delivery: an infrastructure fault outlasted
    its in-place retries (sent again after a backoff), or a bulk chunk steps aside (at once)."""
    unit = session.get(WorkUnit, unit_id)
    attempts = (unit.attempts if unit else 0) + (1 if count_attempt else 0)
    if delay is None:
        delay = backoff(attempts, base=1.0, cap=settings.retry_backoff_max_seconds)
    won = session.execute(
        _fenced(unit_id, worker)
        .values(
            status=QUEUED,
            worker=None,
            heartbeat_at=None,
            suspected_at=None,
            dispatched_at=None,
            not_before=db_now(delay),
            deliveries=WorkUnit.deliveries - 1,
            attempts=attempts,
            error=reason,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        return False
    if delay <= 0:  # no backoff: send now rather than on the reconciler's next pass
        session.refresh(unit)
        send_unit(session, unit)
    return True


# ---------------------------------------------------------------- what a unit's end means for its job


def after_end(*, session: Session, unit: WorkUnit, job: Job) -> None:
    if job.status in jobs.TERMINAL:
        return
    if unit.kind == "chunk":
        maybe_finalize(session=session, job=job)
    elif unit.kind in ("ingest", "train", "trend") and unit.status in (FAILED, CANCELLED):
        if unit.status == CANCELLED or job.cancel_requested:
            end_job(session=session, job=job, to=jobs.CANCELLED, message="cancelled")
        else:
            end_job(session=session, job=job, to=jobs.FAILED, error=unit.error or "failed")
    elif unit.kind == "finalize" and unit.status == FAILED:
        end_job(
            session=session,
            job=job,
            to=jobs.FAILED,
            error=f"finalize failed after {unit.attempts or unit.deliveries} attempts: {unit.error}",
        )


def maybe_finalize(*, session: Session, job: Job) -> bool:
    """Add the job's finalize unit once no chunk is open. True when one was added now."""
    open_chunks = session.execute(
        select(func.count())
        .select_from(WorkUnit)
        .where(WorkUnit.job_id == job.id, WorkUnit.kind == "chunk", WorkUnit.status.in_(OPEN))
    ).scalar_one()
    if open_chunks or job.status in jobs.TERMINAL:
        return False
    return add_unit_once(session=session, job=job, kind="finalize") is not None


def end_job(
    *,
    session: Session,
    job: Job,
    to: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    message: str | None = None,
) -> None:
    """The job's terminal transition, and its webhook in the outbox in the same transaction."""
    if job.status == jobs.QUEUED and to in (jobs.SUCCEEDED, jobs.PARTIALLY_SUCCEEDED):
        jobs.transition(session=session, job=job, to=jobs.RUNNING)
    jobs.transition(session=session, job=job, to=to, result=result, error=error, message=message)
    if (job.params or {}).get("webhook_url"):
        add_unit_once(session=session, job=job, kind="webhook")


def cancel_job(*, session: Session, job: Job) -> None:
    """Queued units end now; running ones stop at their next heartbeat. A job with nothing running
    ends at once: a generation job through its finalize (images already made stay listed, and a job
    whose images all exist ends succeeded), any other as cancelled."""
    if job.status in jobs.TERMINAL:
        raise jobs.IllegalTransition(job.id, job.status, jobs.CANCELLED)
    job.cancel_requested = True
    jobs.add_event(session=session, job_id=job.id, kind="cancel_requested", message="cancel requested")
    session.execute(
        update(WorkUnit)
        .where(WorkUnit.job_id == job.id, WorkUnit.status == QUEUED, WorkUnit.kind.in_(_CANCELLABLE))
        .values(status=CANCELLED, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    running = session.execute(
        select(func.count())
        .select_from(WorkUnit)
        .where(WorkUnit.job_id == job.id, WorkUnit.status.in_(OPEN), WorkUnit.kind.in_(_JOB_WORK))
    ).scalar_one()
    if running:  # they stop at their next heartbeat (a finalize records the outcome)
        return
    if job.kind == "generate" and job.status == jobs.RUNNING:
        maybe_finalize(session=session, job=job)
    else:
        end_job(session=session, job=job, to=jobs.CANCELLED, message="cancelled before it ran")


# ---------------------------------------------------------------- progress


def record_chunk_progress(*, session: Session, unit_id: int, worker: str, job_id: str, done: int) -> bool:
    """A chunk's progress is counted from what exists in its own range (O(chunk), not O(job)); the
    job's is the sum over its chunks, only ever raised, with no lock held on the job row."""
    if not set_done(session=session, unit_id=unit_id, worker=worker, done=done):
        return False
    total_done = session.execute(
        select(func.coalesce(func.sum(WorkUnit.done), 0)).where(
            WorkUnit.job_id == job_id, WorkUnit.kind == "chunk"
        )
    ).scalar_one()
    jobs.raise_progress(session=session, job_id=job_id, done=int(total_done))
    return True


# ---------------------------------------------------------------- reconciliation


def _confirm_seconds(settings: Settings) -> timedelta:
    """How long a suspicion stands before it is confirmed (by reconcile, or by a claim)."""
    return timedelta(seconds=max(2 * settings.heartbeat_seconds, settings.reconcile_every_seconds))


def reconcile(*, session: Session, settings: Settings) -> dict[str, int]:
    """One pass; the caller commits. See the module docstring for what each step repairs. Every time
    compared here is the database's: `now` is read from its clock once for the pass."""
    now = db_time(session)
    counts = {"suspected": 0, "requeued": 0, "failed": 0, "cancelled": 0, "resent": 0, "repaired": 0}
    stale_before = now - timedelta(seconds=settings.stale_after_seconds)
    # confirm a suspicion only after the live workers had time to beat again
    confirm_before = now - _confirm_seconds(settings)
    stale = session.scalars(
        select(WorkUnit).where(
            WorkUnit.status == RUNNING,
            or_(WorkUnit.heartbeat_at.is_(None), WorkUnit.heartbeat_at < stale_before),
        )
    ).all()
    for unit in stale:
        if unit.suspected_at is None or unit.suspected_at > confirm_before:
            if unit.suspected_at is None:
                unit.suspected_at = now
                counts["suspected"] += 1
            continue
        job = session.get(Job, unit.job_id)
        label = describe(unit)
        if job is not None and (
            (unit.kind in _CANCELLABLE and job.cancel_requested)
            or (unit.kind in _JOB_WORK and job.status in jobs.TERMINAL)
        ):
            unit.status, unit.finished_at = CANCELLED, now
            counts["cancelled"] += 1
        elif unit.deliveries >= settings.max_deliveries:
            _give_up(session, unit, f"worker lost {unit.deliveries} times; giving up")
            counts["failed"] += 1
        else:
            jobs.add_event(
                session=session,
                job_id=unit.job_id,
                kind="requeued",
                message=f"{label}: worker {unit.worker} stopped heartbeating; re-queued",
                data={"unit": unit.id, "kind": unit.kind, "seq": unit.seq, "worker": unit.worker},
            )
            unit.status, unit.worker, unit.heartbeat_at, unit.suspected_at = QUEUED, None, None, None
            send_unit(session, unit)
            counts["requeued"] += 1
            continue
        if job is not None:
            after_end(session=session, unit=unit, job=job)

    session.flush()
    counts["resent"] += _send_due(session, now)
    counts["resent"] += _resend_lost(session, now, stale_before, settings)
    counts["repaired"] += _repair_jobs_without_work(session, now)
    return counts


def _send_due(session: Session, now) -> int:  # noqa: ANN001
    """Units with no live message: never sent, a failed send, or a backoff that has ended."""
    due = session.scalars(
        select(WorkUnit).where(
            WorkUnit.status == QUEUED,
            WorkUnit.dispatched_at.is_(None),
            or_(
                # a new job's units are sent by its own dispatch task: leave them a moment first
                and_(WorkUnit.not_before.is_(None), WorkUnit.created_at < now - timedelta(seconds=5)),
                WorkUnit.not_before <= now,
            ),
        )
    ).all()
    for unit in due:
        send_unit(session, unit)
    return len(due)


def _resend_lost(session: Session, now, stale_before, settings: Settings) -> int:  # noqa: ANN001
    """Queued units sent long ago and still waiting. One waiting behind a long queue is not lost, so an
    overdue unit counts as lost only when nothing on its queue runs (nothing consumes it, yet it waits),
    or when a unit of the same queue sent after it was already claimed (queues are FIFO)."""
    resend_before = now - timedelta(seconds=settings.resend_after_seconds)
    overdue = session.scalars(
        select(WorkUnit).where(WorkUnit.status == QUEUED, WorkUnit.dispatched_at < resend_before)
    ).all()
    if not overdue:
        return 0
    busy_queues = set(
        session.scalars(
            select(WorkUnit.queue)
            .where(WorkUnit.status == RUNNING, WorkUnit.heartbeat_at >= stale_before)
            .distinct()
        )
    )
    newest_claimed = dict(
        session.execute(
            select(WorkUnit.queue, func.max(WorkUnit.dispatched_at))
            .where(WorkUnit.status != QUEUED, WorkUnit.started_at.is_not(None))
            .group_by(WorkUnit.queue)
        ).all()
    )
    n = 0
    for unit in overdue:
        newest = newest_claimed.get(unit.queue)
        if unit.queue not in busy_queues or (newest is not None and newest > unit.dispatched_at):
            send_unit(session, unit)
            n += 1
    return n


def _repair_jobs_without_work(session: Session, now) -> int:  # noqa: ANN001
    """A job not ended yet with no open unit: a generation job whose finalize was never added, or one
    whose cancel left nothing running. Any other such job has lost its work and is failed."""
    orphans = session.scalars(
        select(Job).where(
            Job.status.in_((jobs.QUEUED, jobs.RUNNING)),
            ~exists().where(
                WorkUnit.job_id == Job.id, WorkUnit.status.in_(OPEN), WorkUnit.kind.in_(_JOB_WORK)
            ),
        )
    ).all()
    n = 0
    for job in orphans:
        has_units = session.execute(select(WorkUnit.id).where(WorkUnit.job_id == job.id).limit(1)).first()
        if has_units is None and job.created_at > now - timedelta(seconds=60):
            continue  # a job whose units are being written right now
        if job.kind == "generate":
            n += maybe_finalize(session=session, job=job)
        elif job.cancel_requested:
            end_job(session=session, job=job, to=jobs.CANCELLED, message="cancelled")
            n += 1
        else:
            end_job(session=session, job=job, to=jobs.FAILED, error="its queued work was lost")
            n += 1
    return n
