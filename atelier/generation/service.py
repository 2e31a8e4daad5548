"""Generation requests: check a request against its model and the limits, turning it into the job's
typed params, then create the job and its chunk units in one transaction.

    GenerationRequest ──plan──> GenerateParams ──submit──> job (queued) + chunk units ──> one message

Image i of a job has seed `seed + i`, category from the job's per-category blocks, and key
`generated/{job}/{i:06d}.{ext}`. What happens to the chunks after that is atelier.core.units' business.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atelier.core import idempotency, jobs, ownership, quotas, units
from atelier.core.config import Settings
from atelier.core.models import GeneratedImage, Job
from atelier.core.params import GenerateParams, GenerateSource
from atelier.core.queue import QUEUE_OF_PRIORITY
from atelier.generation.request import MAX_SEED, GenerationRequest
from atelier.training.registry import ModelNotFound, resolve_model
from atelier.trends import service as trends
from atelier.tryon import renderer as tryon

FORMATS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
# archive size estimate per pixel, a generous upper bound of what each format stores
ARCHIVE_BYTES_PER_PIXEL = {"png": 2.0, "webp": 0.5, "jpeg": 0.75}
INTERACTIVE_MAX_COUNT = 64
CHUNK_SIZE = {"interactive": 64, "bulk": 256}
MAX_SIZE = 1024
MAX_VARIATIONS = 1000
MAX_INTERPOLATION_STEPS = 256


class InvalidRequest(ValueError):
    """A request that the model or the limits refuse; `field` names the body field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


IdempotencyConflict = idempotency.IdempotencyConflict


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


def _source_image(session: Session, value: str, field_name: str, viewer) -> GeneratedImage:  # noqa: ANN001
    job_id, index = parse_image_id(value, field_name)
    # another key's image is as unknown as a missing one (atelier.core.ownership)
    if viewer is not None and not ownership.may_see(viewer, session.get(Job, job_id)):
        raise InvalidRequest(field_name, f"no generated image {value!r}")
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


def plan(
    *,
    session: Session,
    spec: GenerationRequest,
    settings: Settings,
    model_given: bool = True,
    viewer=None,  # noqa: ANN001
) -> GenerateParams:
    """Check a request against its model and the limits; returns the params the job stores. Images
    and trend reports it names as inputs must be `viewer`'s (atelier.core.ownership); None is the
    product itself (a schedule, a test), which may use any."""
    extra_ops: list[dict[str, Any]] = []
    if spec.follow_report:  # the report's forecast mix and rising palette, resolved once, stored as is
        try:
            follow_mix, palette = trends.follow(session=session, request=spec.follow_report, viewer=viewer)
        except trends.InvalidRequest as exc:
            raise InvalidRequest(exc.field, str(exc)) from exc
        if follow_mix:
            spec = spec.model_copy(update={"per_category": follow_mix, "count": None})
        if palette:
            extra_ops = [{"op": "recolor", "palette": palette, "strength": 1.0}]
    source: GeneratedImage | None = None
    extra: dict[str, Any] = {}
    if spec.mode == "variations":
        if not spec.image_id:
            raise InvalidRequest("image_id", "mode `variations` needs `image_id` ('<job id>:<index>')")
        source = _source_image(session, spec.image_id, "image_id", viewer)
    elif spec.mode == "interpolate":
        if not spec.image_ids or len(spec.image_ids) != 2:
            raise InvalidRequest("image_ids", "mode `interpolate` needs two `image_ids`")
        a, b = (_source_image(session, v, "image_ids", viewer) for v in spec.image_ids)
        if a.model_version_id != b.model_version_id:
            raise InvalidRequest("image_ids", "both images must come from the same model version")
        source = a
        extra = {"seeds": [a.seed, b.seed], "image_ids": list(spec.image_ids)}
    postprocess = spec.postprocess_ops() + extra_ops
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
    if spec.priority == "interactive" and count > settings.interactive_max_images:
        raise InvalidRequest(
            "priority",
            f"interactive jobs are at most {settings.interactive_max_images} images "
            f"(ATELIER_INTERACTIVE_MAX_IMAGES), asked for {count}: use bulk",
        )

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
    if any(op.get("op") == "upscale" for op in postprocess) and size == version.resolution:
        raise InvalidRequest(
            "postprocess", f"`upscale` needs `size` above the model's {version.resolution} px"
        )
    if tryon.template_of(postprocess) is not None:
        for name, _n in per_category:
            try:
                tryon.region_for(name)
            except tryon.UnknownCategory as exc:
                raise InvalidRequest("postprocess", f"`tryon`: {exc}") from exc
    if spec.quality is not None and spec.format == "png":
        raise InvalidRequest("quality", "`quality` applies to webp and jpeg; png is lossless")
    priority = spec.priority or ("interactive" if count <= INTERACTIVE_MAX_COUNT else "bulk")
    if spec.archive:
        estimate = count * size * size * ARCHIVE_BYTES_PER_PIXEL[spec.format]
        if estimate > settings.max_archive_bytes:
            raise InvalidRequest(
                "archive",
                f"a ZIP of {count} {spec.format} images at {size} px would be about {estimate / 1e9:.1f} GB,"
                f" over ATELIER_MAX_ARCHIVE_BYTES ({settings.max_archive_bytes / 1e9:.1f} GB): download"
                " the images (`atelier download`) or ask for fewer",
            )
    return GenerateParams(
        mode=spec.mode,
        model=spec.model,
        model_version=version.id,
        resolution=version.resolution,
        count=count,
        per_category=[(name, n) for name, n in per_category],
        seed=seed,
        truncation=spec.truncation,
        size=size,
        format=spec.format,
        quality=spec.quality,
        postprocess=postprocess,
        priority=priority,
        webhook_url=str(spec.webhook_url) if spec.webhook_url else None,
        archive=spec.archive,
        chunk_size=spec.chunk_size or CHUNK_SIZE[priority],
        source=GenerateSource(**extra) if extra else None,
    )


def _per_category(spec: GenerationRequest, names: list[str], settings: Settings) -> list[list]:
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


# ---------------------------------------------------------------- submit


def submit(
    *,
    session: Session,
    spec: GenerationRequest,
    settings: Settings,
    api_key_id: str | None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    model_given: bool = True,
    quota_key=None,  # noqa: ANN001 - the submitting key (its `id`): quotas are checked for it
    viewer=None,  # noqa: ANN001 - the submitting key: the inputs it names must be its own
) -> tuple[Job, bool]:
    """Create the job and every chunk unit in the caller's transaction; one message goes out after its
    commit (atelier.core.units.dispatch_new_job). Returns (job, created); a repeated idempotency key returns
    the first job. The image count is computed once, by `plan`, whatever the mode (a variations job
    without `count` makes 8), and that count is what the hourly quota is checked against."""
    scoped_key = idempotency.scoped(api_key_id, idempotency_key)
    earlier = idempotency.existing(session, scoped_key, request_hash)
    if earlier is not None:
        return earlier, False
    params = plan(session=session, spec=spec, settings=settings, model_given=model_given, viewer=viewer)
    if quota_key is not None:
        quotas.check_submit(session=session, key=quota_key, settings=settings, images=params.count)
    job, created = idempotency.create_once(
        session,
        scoped_key,
        request_hash,
        lambda: jobs.create_job(
            session=session,
            kind="generate",
            params=params.model_dump(mode="json"),
            total=params.count,
            priority=params.priority,
            api_key_id=api_key_id,
            idempotency_key=scoped_key,
            request_hash=request_hash,
        ),
    )
    if not created:
        return job, False
    size = params.chunk_size
    starts = range(0, params.count, size)
    for i, start in enumerate(starts):
        units.add_unit(
            session=session,
            job=job,
            kind="chunk",
            seq=i,
            spec={"start": start, "count": min(size, params.count - start)},
            send=False,
        )
    jobs.add_event(
        session=session,
        job_id=job.id,
        kind="planned",
        message=f"{params.count} images in {len(starts)} chunks of up to {size} on "
        f"{QUEUE_OF_PRIORITY[params.priority]}",
        data={"chunks": len(starts), "chunk_size": size},
    )
    units.dispatch_new_job(session, job)
    return job, True
