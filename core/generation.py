"""Generation requests: validate a request against its model, create the job and its chunks, and send
the chunk tasks. The chunk lifecycle after that (leases, progress, finalize, cancel, reconcile) is in
core.chunks.

    submit(spec)  ──> job (queued) + generation_chunks rows, one transaction ──> chunk tasks after commit

Image i of a job has seed `seed + i`, category from the job's per-category blocks, and key
`generated/{job}/{i:06d}.{ext}`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
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

# the state submit creates chunks in; core.chunks holds the rest of the chunk states
CHUNK_QUEUED = "queued"

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
