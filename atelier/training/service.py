"""Training job requests: validation (with the field at fault), snapshot, job row.

The API does not import torch, so the preset and architecture names are repeated here; a unit test
checks that they match atelier.gan.config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from atelier.core import jobs
from atelier.core.models import Job
from atelier.core.params import ArchName, PresetName, TrainParams
from atelier.core.storage import ObjectStore
from atelier.training import registry, snapshots

PRESETS = {"tiny": 32, "small": 64, "base": 128}
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

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and (value < 16 or value > 256 or value & (value - 1)):
            raise ValueError(f"resolution must be a power of two between 16 and 256, got {value}")
        return value


def submit_training(
    *,
    session: Session,
    store: ObjectStore,
    request: TrainingRequest,
    api_key_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Job:
    """Freeze the dataset, resolve the base model and queue the job (the caller dispatches and commits)."""
    known = snapshots.known_categories(session=session)
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
    try:
        snapshot = snapshots.freeze(session=session, store=store, categories=request.categories)
    except snapshots.EmptySelection as exc:
        raise InvalidRequest("categories", str(exc)) from exc
    params = TrainParams(
        **{
            **request.model_dump(),
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
    )
