"""The chunk lifecycle of a generation job: leases, progress, finalize, cancel and reconciliation.
core.generation plans a request and creates the chunks; everything after that happens here.

    queued ──claim_chunk──> running ──finish_chunk──> succeeded | failed | cancelled
      ^                       │  heartbeat_chunk between batches (True: cancelled, stop)
      └── finish_chunk(queued): yielded to interactive work or retried, back in line
      └── reconcile: heartbeat stale -> re-queued (or failed after max_deliveries); a stale running
          chunk may also be re-claimed directly, since the claim accepts it

    claim:     one conditional UPDATE (status queued, or running with a stale heartbeat); rowcount 1 wins,
               so duplicate messages are turned away; the job goes queued -> running with its first chunk
    progress:  counted from generated_images rows (upserted on (job_id, index)), never incremented, so
               re-deliveries cannot overcount
    finalize:  sent by whoever leaves SQL showing no chunk queued or running (the job row locked first);
               reconcile re-sends it for finished but unfinalized jobs
    reconcile (on beat): stale chunks re-queued, lost chunk messages re-sent, finalize re-sent

Chunks hold their own leases, so the job row of a generate job is kept fresh here and the generic job
reconciler leaves it alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core import jobs
from core.config import Settings
from core.generation import CHUNK_QUEUED, DELIVER_WEBHOOK, send_chunk, send_finalize
from core.models import GeneratedImage, GenerationChunk, Job, utcnow
from core.queue import send_after_commit

# chunk states; CHUNK_QUEUED is defined in core.generation, whose submit creates chunks in it
CHUNK_RUNNING, CHUNK_SUCCEEDED, CHUNK_FAILED, CHUNK_CANCELLED = "running", "succeeded", "failed", "cancelled"
CHUNK_OPEN = (CHUNK_QUEUED, CHUNK_RUNNING)


# ---------------------------------------------------------------- chunk leases


@dataclass
class ClaimedChunk:
    job_id: str
    index: int
    start: int
    count: int
    deliveries: int
    batch_size: int | None
    params: dict


def claim_chunk(
    *, session: Session, job_id: str, index: int, worker: str, settings: Settings
) -> ClaimedChunk | None:
    """Take a queued chunk (or a running one whose heartbeat is stale) in one conditional UPDATE. A chunk
    of a cancelled or ended job is dropped; the job goes queued -> running with its first chunk."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    if job.status in jobs.TERMINAL or job.cancel_requested:
        session.execute(
            update(GenerationChunk)
            .where(GenerationChunk.job_id == job_id, GenerationChunk.index == index)
            .where(GenerationChunk.status == CHUNK_QUEUED)
            .values(status=CHUNK_CANCELLED, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        _maybe_finalize(session, job)
        return None
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.stale_after_seconds)
    result = session.execute(
        update(GenerationChunk)
        .where(GenerationChunk.job_id == job_id, GenerationChunk.index == index)
        .where(
            or_(
                GenerationChunk.status == CHUNK_QUEUED,
                and_(
                    GenerationChunk.status == CHUNK_RUNNING,
                    or_(GenerationChunk.heartbeat_at.is_(None), GenerationChunk.heartbeat_at < stale_before),
                ),
            )
        )
        .values(
            status=CHUNK_RUNNING,
            worker=worker,
            heartbeat_at=now,
            started_at=func.coalesce(GenerationChunk.started_at, now),
            deliveries=GenerationChunk.deliveries + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    chunk = session.scalars(
        select(GenerationChunk).where(GenerationChunk.job_id == job_id, GenerationChunk.index == index)
    ).one()
    session.refresh(chunk)
    if chunk.deliveries > settings.max_deliveries:
        chunk.status, chunk.finished_at = CHUNK_FAILED, now
        chunk.error = f"gave up after {chunk.deliveries - 1} deliveries"
        jobs.add_event(
            session=session,
            job_id=job_id,
            kind="chunk_failed",
            message=f"chunk {index} failed: {chunk.error}",
            data={"chunk": index},
        )
        _maybe_finalize(session, job)
        return None
    started = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == jobs.QUEUED)
        .values(status=jobs.RUNNING, started_at=func.coalesce(Job.started_at, now), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    if started.rowcount == 1:
        jobs.add_event(
            session=session,
            job_id=job_id,
            kind="running",
            message=f"started on {worker}",
            data={"from": jobs.QUEUED, "to": jobs.RUNNING, "worker": worker},
        )
    if chunk.deliveries > 1:
        jobs.add_event(
            session=session,
            job_id=job_id,
            kind="chunk_redelivered",
            message=f"chunk {index} re-delivered (delivery {chunk.deliveries}) on {worker}",
            data={"chunk": index, "delivery": chunk.deliveries},
        )
    return ClaimedChunk(
        job_id, index, chunk.start, chunk.count, chunk.deliveries, chunk.batch_size, job.params
    )


def heartbeat_chunk(*, session: Session, job_id: str, index: int, worker: str) -> bool:
    """Refresh the chunk's lease (and the job's); True when the chunk should stop."""
    now = utcnow()
    result = session.execute(
        update(GenerationChunk)
        .where(GenerationChunk.job_id == job_id, GenerationChunk.index == index)
        .where(GenerationChunk.status == CHUNK_RUNNING, GenerationChunk.worker == worker)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == jobs.RUNNING)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return True
    row = session.execute(select(Job.cancel_requested, Job.status).where(Job.id == job_id)).one()
    return bool(row.cancel_requested) or row.status in jobs.TERMINAL


def interactive_work_waiting(*, session: Session) -> bool:
    """Is an interactive chunk queued (and recently sent, so its message is live)? Bulk chunks yield
    to it between batches: one worker polls its queues round-robin, so without this an interactive job
    would wait behind however many bulk chunks the worker happens to fetch first."""
    return (
        session.execute(
            select(GenerationChunk.id)
            .join(Job, Job.id == GenerationChunk.job_id)
            .where(GenerationChunk.status == CHUNK_QUEUED, Job.priority == "interactive")
            .where(Job.status.in_((jobs.QUEUED, jobs.RUNNING)), Job.cancel_requested.is_(False))
            .limit(1)
        ).first()
        is not None
    )


def upsert_images(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or update generated_images rows on (job_id, index), in one statement."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(GeneratedImage).values(rows)
    updated = {c: stmt.excluded[c] for c in rows[0] if c not in ("job_id", "index")}
    session.execute(stmt.on_conflict_do_update(index_elements=["job_id", "index"], set_=updated))


def count_images(session: Session, job_id: str) -> int:
    return session.execute(
        select(func.count()).select_from(GeneratedImage).where(GeneratedImage.job_id == job_id)
    ).scalar_one()


def record_progress(*, session: Session, job_id: str) -> int:
    """Progress counts the rows that exist (never increments), so re-deliveries cannot overcount."""
    job = session.get(Job, job_id, with_for_update=True)
    done = count_images(session, job_id)
    if job is not None and job.status == jobs.RUNNING:
        jobs.set_progress(session=session, job=job, done=done)
    return done


def finish_chunk(
    *, session: Session, job_id: str, index: int, worker: str, status: str, error: str | None = None
) -> None:
    """End our lease on the chunk; the chunk that leaves none open sends finalize. The job row is
    locked first so that two chunks ending at once cannot both miss being last (PostgreSQL)."""
    job = session.get(Job, job_id, with_for_update=True)
    if status == CHUNK_QUEUED:  # yielded to interactive work or retried: back in line, not a delivery
        values: dict[str, Any] = {
            "status": CHUNK_QUEUED,
            "worker": None,
            "heartbeat_at": None,
            "dispatched_at": utcnow(),
            "error": error,
        }
        if error is None:
            values["deliveries"] = GenerationChunk.deliveries - 1
    else:
        values = {"status": status, "finished_at": utcnow(), "error": error}
    result = session.execute(
        update(GenerationChunk)
        .where(GenerationChunk.job_id == job_id, GenerationChunk.index == index)
        .where(GenerationChunk.status == CHUNK_RUNNING, GenerationChunk.worker == worker)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1 and status == CHUNK_QUEUED and job is not None:
        send_chunk(session, job, index)
    if job is not None:
        _maybe_finalize(session, job)


def _maybe_finalize(session: Session, job: Job) -> bool:
    open_chunks = session.execute(
        select(func.count())
        .select_from(GenerationChunk)
        .where(GenerationChunk.job_id == job.id, GenerationChunk.status.in_(CHUNK_OPEN))
    ).scalar_one()
    if open_chunks == 0 and job.status not in jobs.TERMINAL:
        send_finalize(session, job)
        return True
    return False


def cancel_chunks(*, session: Session, job: Job) -> int:
    """Called with the job's cancel: queued chunks end now, running ones stop at their next batch; when
    none is running the job is finalized (as cancelled) at once. Images already made stay listed."""
    result = session.execute(
        update(GenerationChunk)
        .where(GenerationChunk.job_id == job.id, GenerationChunk.status == CHUNK_QUEUED)
        .values(status=CHUNK_CANCELLED, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if (
        not _maybe_finalize(session, job)
        and job.status == jobs.CANCELLED
        and (job.params or {}).get("webhook_url")
    ):
        send_after_commit(session, DELIVER_WEBHOOK[0], kwargs={"job_id": job.id}, queue=DELIVER_WEBHOOK[1])
    return result.rowcount


def chunk_counts(session: Session, job_id: str) -> dict[str, int]:
    rows = session.execute(
        select(GenerationChunk.status, func.count())
        .where(GenerationChunk.job_id == job_id)
        .group_by(GenerationChunk.status)
    ).all()
    return {status: n for status, n in rows}


def iter_images(session: Session, job_id: str, batch: int = 1000) -> Iterator[GeneratedImage]:
    """Every image row of a job by index, fetched in keyset pages (constant memory)."""
    last = -1
    while True:
        rows = list(
            session.scalars(
                select(GeneratedImage)
                .where(GeneratedImage.job_id == job_id, GeneratedImage.index > last)
                .order_by(GeneratedImage.index)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].index
        session.expunge_all()


# ---------------------------------------------------------------- reconciliation


def reconcile(*, session: Session, settings: Settings) -> dict[str, int]:
    """One pass over generation work; see the module docstring. Commits nothing: the caller does."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.stale_after_seconds)
    resend_before = now - timedelta(seconds=settings.resend_after_seconds)
    counts = {"chunks_requeued": 0, "chunks_resent": 0, "finalize_resent": 0}
    active = list(
        session.scalars(
            select(Job).where(Job.kind == "generate", Job.status.in_((jobs.QUEUED, jobs.RUNNING)))
        )
    )
    by_id = {job.id: job for job in active}
    for job in active:  # chunks hold the leases: keep the generic job reconciler off these rows
        if job.status == jobs.RUNNING:
            job.heartbeat_at = now
        else:
            job.dispatched_at = now
    if not active:
        return counts

    stale = session.scalars(
        select(GenerationChunk).where(
            GenerationChunk.job_id.in_(by_id),
            GenerationChunk.status == CHUNK_RUNNING,
            or_(GenerationChunk.heartbeat_at.is_(None), GenerationChunk.heartbeat_at < stale_before),
        )
    ).all()
    for chunk in stale:
        job = by_id[chunk.job_id]
        if job.cancel_requested:
            chunk.status, chunk.finished_at = CHUNK_CANCELLED, now
            continue
        if chunk.deliveries >= settings.max_deliveries:
            chunk.status, chunk.finished_at = CHUNK_FAILED, now
            chunk.error = f"worker lost {chunk.deliveries} times; giving up"
            jobs.add_event(
                session=session,
                job_id=job.id,
                kind="chunk_failed",
                message=f"chunk {chunk.index}: {chunk.error}",
                data={"chunk": chunk.index},
            )
            continue
        jobs.add_event(
            session=session,
            job_id=job.id,
            kind="chunk_requeued",
            message=f"chunk {chunk.index}: worker {chunk.worker} stopped heartbeating; re-queued",
            data={"chunk": chunk.index, "worker": chunk.worker},
        )
        chunk.status, chunk.worker, chunk.heartbeat_at, chunk.dispatched_at = CHUNK_QUEUED, None, None, now
        send_chunk(session, job, chunk.index)
        counts["chunks_requeued"] += 1

    for chunk in _lost_queued_chunks(session, by_id, stale_before, resend_before):
        chunk.dispatched_at = now
        send_chunk(session, by_id[chunk.job_id], chunk.index)
        counts["chunks_resent"] += 1

    session.flush()
    for job in active:
        info = job.progress_info or {}
        if info.get("_finalize_at", 0) > resend_before.timestamp():
            continue  # a finalize was sent recently (or is running and keeps this fresh)
        if _maybe_finalize(session, job):
            counts["finalize_resent"] += 1
    return counts


def _lost_queued_chunks(
    session: Session, by_id: dict[str, Job], stale_before, resend_before
) -> list[GenerationChunk]:
    """Queued chunks whose message is presumed lost. A chunk waiting behind a long queue is not lost,
    so an overdue chunk counts as lost only when no chunk is running anywhere (nothing consumes the
    queues, yet it waits), or when a chunk of the same queue sent after it was already claimed (queues
    are FIFO, so its own message is gone)."""
    overdue = session.scalars(
        select(GenerationChunk).where(
            GenerationChunk.job_id.in_(by_id),
            GenerationChunk.status == CHUNK_QUEUED,
            or_(GenerationChunk.dispatched_at.is_(None), GenerationChunk.dispatched_at < resend_before),
        )
    ).all()
    if not overdue:
        return []
    busy = session.execute(
        select(GenerationChunk.id)
        .where(GenerationChunk.status == CHUNK_RUNNING, GenerationChunk.heartbeat_at >= stale_before)
        .limit(1)
    ).first()
    newest_claimed = dict(
        session.execute(
            select(Job.priority, func.max(GenerationChunk.dispatched_at))
            .join(Job, Job.id == GenerationChunk.job_id)
            .where(GenerationChunk.job_id.in_(by_id), GenerationChunk.status != CHUNK_QUEUED)
            .group_by(Job.priority)
        ).all()
    )
    lost = []
    for chunk in overdue:
        newest = newest_claimed.get(by_id[chunk.job_id].priority)
        if (
            chunk.dispatched_at is None
            or busy is None
            or (newest is not None and newest > chunk.dispatched_at)
        ):
            lost.append(chunk)
    return lost


def resend_job(*, session: Session, job_id: str) -> int:
    """Send every queued chunk of a job again (finalize when none is open): the job's entry task,
    for whoever re-dispatches a generate job by its kind. Duplicates are harmless: claims turn them away."""
    job = session.get(Job, job_id)
    if job is None or job.status in jobs.TERMINAL:
        return 0
    queued = session.scalars(
        select(GenerationChunk).where(
            GenerationChunk.job_id == job_id, GenerationChunk.status == CHUNK_QUEUED
        )
    ).all()
    for chunk in queued:
        chunk.dispatched_at = utcnow()
        send_chunk(session, job, chunk.index)
    job.dispatched_at = utcnow()
    _maybe_finalize(session, job)
    return len(queued)
