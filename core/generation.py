"""Generation jobs: validate a request against its model, create the job and its chunks, lease chunks,
cancel them, and reconcile them.

    submit(spec)  ──> job (queued) + generation_chunks rows, one transaction ──> chunk tasks after commit
    chunk task:   claim_chunk ─> batches (heartbeat_chunk between them) ─> finish_chunk
                  └─ the last chunk to finish (SQL says none is queued or running) sends finalize
    reconcile_generation (on beat): stale chunks re-queued, lost chunk messages re-sent, finished but
                  unfinalized jobs get finalize again

Image i of a job has seed `seed + i`, category from the job's per-category blocks, and key
`generated/{job}/{i:06d}.{ext}`; rows are upserted on (job_id, index). Chunks hold their own leases, so the
job row of a generate job is kept fresh here and the generic job reconciler leaves it alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import jobs
from core.config import Settings
from core.models import GeneratedImage, GenerationChunk, Job, utcnow
from core.queue import send_after_commit
from core.registry import ModelNotFound, resolve_model

GENERATE_CHUNK = "atelier.generate_chunk"
FINALIZE = ("atelier.finalize_generation", "io")
DELIVER_WEBHOOK = ("atelier.deliver_webhook", "io")
QUEUE_OF_PRIORITY = {"interactive": "generate.interactive", "bulk": "generate.bulk"}

CHUNK_QUEUED, CHUNK_RUNNING, CHUNK_SUCCEEDED, CHUNK_FAILED, CHUNK_CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
CHUNK_OPEN = (CHUNK_QUEUED, CHUNK_RUNNING)

MODES = ("sample", "variations", "interpolate")
FORMATS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
INTERACTIVE_MAX_COUNT = 64
CHUNK_SIZE = {"interactive": 64, "bulk": 256}
MAX_SIZE = 1024
MAX_VARIATIONS = 1000
MAX_INTERPOLATION_STEPS = 256
MAX_SEED = 2**31 - 1


class InvalidRequest(ValueError):
    """A request that the model or the limits refuse; `field` names the body field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class IdempotencyConflict(Exception):
    pass


@dataclass
class GenerationSpec:
    """A request as the API validated its shape; `plan` checks it against the model."""

    model: str = "production"
    count: int | None = None
    per_category: dict[str, int] | None = None
    seed: int | None = None
    truncation: float = 1.0
    size: int | None = None
    format: str = "png"
    quality: int | None = None
    postprocess: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "sample"
    image_id: str | None = None
    image_ids: list[str] | None = None
    strength: float = 0.3
    priority: str | None = None
    webhook_url: str | None = None
    archive: bool = False
    chunk_size: int | None = None


# ---------------------------------------------------------------- planning


def image_key(job_id: str, index: int, ext: str) -> str:
    return f"generated/{job_id}/{index:06d}.{ext}"


def manifest_key(job_id: str) -> str:
    return f"generated/{job_id}/manifest.jsonl"


def archive_key(job_id: str) -> str:
    return f"generated/{job_id}/images.zip"


def parse_image_id(value: str, field_name: str) -> tuple[str, int]:
    job_id, sep, index = value.partition(":")
    if not sep or not job_id or not index.isdigit():
        raise InvalidRequest(field_name, f"{value!r} is not an image id: expected '<job id>:<index>'")
    return job_id, int(index)


def _source_image(session: Session, value: str, field_name: str) -> GeneratedImage:
    job_id, index = parse_image_id(value, field_name)
    row = session.scalars(
        select(GeneratedImage).where(GeneratedImage.job_id == job_id, GeneratedImage.index == index)
    ).one_or_none()
    if row is None:
        raise InvalidRequest(field_name, f"no generated image {value!r}")
    return row


def _resolve_version(session: Session, ref: str, *, explicit: bool, source: GeneratedImage | None):
    if source is not None and not explicit:
        ref = source.model_version_id or ref
    try:
        version = resolve_model(session=session, ref=ref)
    except ModelNotFound as exc:
        raise InvalidRequest("model", str(exc)) from exc
    if source is not None and source.model_version_id and source.model_version_id != version.id:
        raise InvalidRequest(
            "model", f"image was made by model {source.model_version_id}, not {version.id}: omit `model`"
        )
    return version


def plan(*, session: Session, spec: GenerationSpec, settings: Settings, model_given: bool = True) -> dict:
    """Check `spec` against its model and the limits; returns the job params the workers read."""
    source: GeneratedImage | None = None
    extra: dict[str, Any] = {}
    if spec.mode == "variations":
        if not spec.image_id:
            raise InvalidRequest("image_id", "mode `variations` needs `image_id` ('<job id>:<index>')")
        source = _source_image(session, spec.image_id, "image_id")
    elif spec.mode == "interpolate":
        if not spec.image_ids or len(spec.image_ids) != 2:
            raise InvalidRequest("image_ids", "mode `interpolate` needs two `image_ids`")
        a, b = (_source_image(session, v, "image_ids") for v in spec.image_ids)
        if a.model_version_id != b.model_version_id:
            raise InvalidRequest("image_ids", "both images must come from the same model version")
        source = a
        extra = {"seeds": [a.seed, b.seed], "image_ids": list(spec.image_ids)}
    version = _resolve_version(session, spec.model, explicit=model_given, source=source)
    names = list(version.class_names) or ["design"]

    if spec.mode == "sample":
        per_category = _per_category(spec, names, settings)
    else:
        if spec.per_category:
            raise InvalidRequest("per_category", f"mode `{spec.mode}` keeps the source image's category")
        limit = MAX_VARIATIONS if spec.mode == "variations" else MAX_INTERPOLATION_STEPS
        count = spec.count or (8 if spec.mode == "variations" else 10)
        if count > limit or count < (2 if spec.mode == "interpolate" else 1):
            raise InvalidRequest("count", f"mode `{spec.mode}` makes between 1 and {limit} images")
        assert source is not None
        per_category = [[source.category, count]]
        if spec.mode == "variations":
            extra = {"seed": source.seed, "image_id": spec.image_id, "strength": spec.strength}
        extra["category"] = source.category
    count = sum(n for _, n in per_category)

    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**30)
    if seed + count - 1 > MAX_SEED:
        raise InvalidRequest("seed", f"seed + count must stay below 2**31 (seed {seed}, count {count})")
    size = spec.size or version.resolution
    if size < version.resolution or size > MAX_SIZE or (size != version.resolution and size % 16):
        raise InvalidRequest(
            "size",
            f"size must be the model's resolution ({version.resolution}) or a multiple of 16 up to {MAX_SIZE}"
            f" (larger sizes are upscaled), got {size}",
        )
    if any(op.get("op") == "upscale" for op in spec.postprocess) and size == version.resolution:
        raise InvalidRequest(
            "postprocess", f"`upscale` needs `size` above the model's {version.resolution} px"
        )
    if spec.quality is not None and spec.format == "png":
        raise InvalidRequest("quality", "`quality` applies to webp and jpeg; png is lossless")
    priority = spec.priority or ("interactive" if count <= INTERACTIVE_MAX_COUNT else "bulk")
    return {
        "mode": spec.mode,
        "model": spec.model,
        "model_version": version.id,
        "resolution": version.resolution,
        "count": count,
        "per_category": per_category,
        "seed": seed,
        "truncation": spec.truncation,
        "size": size,
        "format": spec.format,
        "quality": spec.quality,
        "postprocess": spec.postprocess,
        "priority": priority,
        "webhook_url": spec.webhook_url,
        "archive": spec.archive,
        "chunk_size": spec.chunk_size or CHUNK_SIZE[priority],
        **({"source": extra} if extra else {}),
    }


def _per_category(spec: GenerationSpec, names: list[str], settings: Settings) -> list[list]:
    if spec.per_category:
        unknown = [c for c in spec.per_category if c not in names]
        if unknown:
            raise InvalidRequest(
                "per_category", f"unknown category {unknown[0]!r}; this model knows {', '.join(names)}"
            )
        pairs = [[name, int(n)] for name, n in spec.per_category.items() if n > 0]
        total = sum(n for _, n in pairs)
        if spec.count is not None and spec.count != total:
            raise InvalidRequest("count", f"count {spec.count} differs from the per_category sum {total}")
    else:
        total = spec.count or 0
        k = len(names)
        pairs = [[name, total // k + (1 if j < total % k else 0)] for j, name in enumerate(names)]
        pairs = [p for p in pairs if p[1] > 0]
    if total < 1:
        raise InvalidRequest("count", "give `count` or `per_category` with at least one image")
    if total > settings.max_generation_count:
        raise InvalidRequest(
            "count", f"at most {settings.max_generation_count} images per job, asked for {total}"
        )
    return pairs


def categories_for(params: dict, start: int, stop: int) -> list[str]:
    """The category of each image index in [start, stop): per-category blocks in request order."""
    out: list[str] = []
    offset = 0
    for name, n in params["per_category"]:
        lo, hi = max(start, offset), min(stop, offset + n)
        out += [name] * max(0, hi - lo)
        offset += n
    return out


# ---------------------------------------------------------------- submit


def submit(
    *,
    session: Session,
    spec: GenerationSpec,
    settings: Settings,
    api_key_id: str | None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    model_given: bool = True,
) -> tuple[Job, bool]:
    """Create the job and every chunk row in the caller's transaction and queue the chunk tasks for
    after its commit. Returns (job, created); a repeated idempotency key returns the first job."""
    scoped_key = f"{api_key_id}:{idempotency_key}"[:255] if idempotency_key else None
    if scoped_key:
        existing = _by_idempotency_key(session, scoped_key, request_hash)
        if existing is not None:
            return existing, False
    params = plan(session=session, spec=spec, settings=settings, model_given=model_given)
    try:
        with session.begin_nested():
            job = jobs.create_job(
                session=session,
                kind="generate",
                params=params,
                total=params["count"],
                priority=params["priority"],
                api_key_id=api_key_id,
                idempotency_key=scoped_key,
                request_hash=request_hash,
            )
    except IntegrityError:  # a concurrent request with the same key won
        existing = _by_idempotency_key(session, scoped_key, request_hash) if scoped_key else None
        if existing is None:
            raise
        return existing, False
    now = utcnow()
    job.dispatched_at = now
    size = params["chunk_size"]
    chunks = [
        GenerationChunk(
            job_id=job.id,
            index=i,
            start=start,
            count=min(size, params["count"] - start),
            status=CHUNK_QUEUED,
            deliveries=0,
            dispatched_at=now,
        )
        for i, start in enumerate(range(0, params["count"], size))
    ]
    session.add_all(chunks)
    session.flush()
    jobs.add_event(
        session=session,
        job_id=job.id,
        kind="planned",
        message=f"{params['count']} images in {len(chunks)} chunks of up to {size} on "
        f"{QUEUE_OF_PRIORITY[params['priority']]}",
        data={"chunks": len(chunks), "chunk_size": size},
    )
    for chunk in chunks:
        send_chunk(session, job, chunk.index)
    return job, True


def _by_idempotency_key(session: Session, key: str, request_hash: str | None) -> Job | None:
    job = session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()
    if job is not None and request_hash is not None and job.request_hash != request_hash:
        raise IdempotencyConflict(
            f"Idempotency-Key was already used for job {job.id} with a different request body"
        )
    return job


def send_chunk(session: Session, job: Job, index: int) -> None:
    queue = QUEUE_OF_PRIORITY.get(job.priority, "generate.bulk")
    send_after_commit(session, GENERATE_CHUNK, kwargs={"job_id": job.id, "chunk_index": index}, queue=queue)


def send_finalize(session: Session, job: Job) -> None:
    job.progress_info = {**(job.progress_info or {}), "_finalize_at": utcnow().timestamp()}
    send_after_commit(session, FINALIZE[0], kwargs={"job_id": job.id}, queue=FINALIZE[1])


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
