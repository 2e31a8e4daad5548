"""Training job requests: validation (with the field at fault), snapshot, job row.

The API does not import torch, so the preset and architecture names are repeated here; a unit test
checks that they match atelier.gan.config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, HttpUrl, field_validator
from sqlalchemy.orm import Session

from atelier.core import idempotency, jobs, quotas, units
from atelier.core.config import Settings
from atelier.core.models import Job
from atelier.core.params import ArchName, PresetName, TrainParams
from atelier.core.storage import ObjectStore
from atelier.training import registry, snapshots

PRESETS = {"tiny": 32, "small": 64, "base": 128, "large": 256}
BATCH_SIZES = {
    "tiny": 32,
    "small": 32,
    "base": 64,
    "large": 32,
}  # the global batch, split evenly over the devices
ARCHS = ("atelier", "dcgan")
MAX_STEPS = 1_000_000


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class TrainingRequest(BaseModel):
    preset: PresetName = "small"
    resolution: int | None = Field(None, description="power of two, 16..256; default: the preset's")
    steps: int = Field(10_000, ge=1, le=MAX_STEPS)
    categories: list[str] | None = None
    base_model: str | None = Field(None, description='"production", a version id, or null for from scratch')
    arch: ArchName = "atelier"
    promote: Literal["if_better", "always", "never"] = "if_better"
    kid_tolerance: float = Field(0.0, ge=0.0, description="promote when new KID <= production KID + this")
    seed: int = Field(0, ge=0, lt=2**31)
    devices: int = Field(
        1,
        ge=1,
        description="torch.distributed ranks per segment, on one worker host: its GPUs (NCCL) on a CUDA "
        "worker, gloo processes on a CPU worker; at most ATELIER_MAX_TRAINING_DEVICES, and it must divide "
        "the preset's batch",
    )
    webhook_url: HttpUrl | None = Field(None, description="POSTed a signed job event when the job ends")

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and (value < 16 or value > 256 or value & (value - 1)):
            raise ValueError(f"resolution must be a power of two between 16 and 256, got {value}")
        return value


class NotAllowed(InvalidRequest):
    """A field whose value only an admin key may send (answered 403 naming it)."""


def check_gate(*, request: TrainingRequest, settings: Settings, admin: bool) -> None:
    """The promotion gate is the owner's, not the submitter's: forcing promotion past it is an admin's
    act (the same as POST /v1/models/{id}/promote), and a tolerance is bounded so that no request can
    widen the gate until any model passes."""
    if request.promote == "always" and not admin:
        raise NotAllowed(
            "promote", '`promote: "always"` skips the promotion gate: only an admin key may send it'
        )
    check_tolerance("kid_tolerance", request.kid_tolerance, settings)


def check_tolerance(field: str, value: float, settings: Settings) -> None:
    if value > settings.max_kid_tolerance:
        raise InvalidRequest(
            field, f"{field} {value} is over ATELIER_MAX_KID_TOLERANCE={settings.max_kid_tolerance}"
        )


def check_devices(request: TrainingRequest, settings: Settings) -> None:
    """The API host sees no GPUs: how many a worker has is checked when the segment starts."""
    limit = settings.max_training_devices
    if request.devices > limit:
        raise InvalidRequest(
            "devices", f"devices {request.devices} is more than ATELIER_MAX_TRAINING_DEVICES={limit}"
        )
    batch = BATCH_SIZES[request.preset]
    if batch % request.devices:
        raise InvalidRequest(
            "devices",
            f"devices {request.devices} does not divide the {request.preset} preset's batch of {batch}: "
            "every rank takes an equal share",
        )


def submit_training(
    *,
    session: Session,
    store: ObjectStore,
    request: TrainingRequest,
    api_key_id: str | None = None,
    extra: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    frozen: snapshots.Frozen | None = None,
) -> Job:
    """Freeze the dataset, resolve the base model and queue the job (the caller dispatches and commits).

    `frozen` is the freeze's read and PUT done beforehand (snapshots.prepare), outside the caller's
    write transaction; without it they happen here."""
    try:
        if frozen is None:
            frozen = snapshots.prepare(session=session, store=store, categories=request.categories)
    except snapshots.EmptySelection:
        frozen = None
    known = frozen.known if frozen is not None else snapshots.known_categories(session=session)
    if request.categories:
        unknown = sorted(set(request.categories) - set(known))
        if unknown:
            raise InvalidRequest(
                "categories",
                f"unknown categories {', '.join(unknown)}; the catalogue has {', '.join(known) or 'none'}",
            )
    base = None
    if request.base_model is not None:
        try:
            base = registry.resolve_model(session=session, ref=request.base_model)
        except registry.ModelNotFound as exc:
            raise InvalidRequest("base_model", str(exc)) from exc
        if request.arch != base.arch:
            raise InvalidRequest("arch", f"base model {base.id} is {base.arch}, not {request.arch}")
    resolution = request.resolution or (base.resolution if base else PRESETS[request.preset])
    if base is not None and resolution != base.resolution:
        raise InvalidRequest("resolution", f"base model {base.id} is {base.resolution} px, not {resolution}")
    if frozen is None:
        raise InvalidRequest("categories", "the catalogue has no images for these categories")
    snapshot = snapshots.record(session=session, store=store, frozen=frozen, categories=request.categories)
    params = TrainParams(
        **{
            **request.model_dump(mode="json"),
            "resolution": resolution,
            "base_model": base.id if base else None,
            "snapshot_id": snapshot.id,
            "class_names": snapshot.class_names,
            **(extra or {}),
        }
    )
    return jobs.create_job(
        session=session,
        kind="train",
        params=params.model_dump(),
        total=request.steps,
        priority="bulk",
        api_key_id=api_key_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


def submit(
    *,
    session: Session,
    store: ObjectStore,
    settings: Settings,
    request: TrainingRequest,
    key,  # noqa: ANN001 - the submitting API key (its `id`)
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """POST /v1/training-jobs: (job, created). A repeated Idempotency-Key answers with the first job
    (before the quota is counted); a new job is checked against the key's quota, then queued."""
    check_devices(request, settings)
    # the catalogue read and the manifest PUT before the SQL transaction's first statement, which on SQLite
    # takes the write lock: the write transaction below is a few short statements
    try:
        frozen = snapshots.prepare(session=session, store=store, categories=request.categories)
    except snapshots.EmptySelection:
        frozen = None
    scoped = idempotency.scoped(key.id, idempotency_key)
    body_hash = idempotency.request_hash(request.model_dump(mode="json")) if scoped else None
    earlier = idempotency.existing(session, scoped, body_hash)
    if earlier is not None:
        return earlier, False
    check_gate(request=request, settings=settings, admin="admin" in key.scopes)
    quotas.check_submit(session=session, key=key, settings=settings, kind="train")
    job, created = idempotency.create_once(
        session,
        scoped,
        body_hash,
        lambda: submit_training(
            session=session,
            store=store,
            request=request,
            api_key_id=key.id,
            idempotency_key=scoped,
            request_hash=body_hash,
            frozen=frozen,
        ),
    )
    if created:
        units.start_work(session, job)
    return job, created
