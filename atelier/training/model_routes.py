from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import select

from atelier.api.deps import AdminKey, ReadKey, SessionDep, StoreDep, invalid
from atelier.api.schemas import errors
from atelier.core.models import ModelVersion
from atelier.core.pagination import MAX_LIMIT, BadCursor, page
from atelier.core.storage import ObjectStore
from atelier.training import registry

router = APIRouter(prefix="/v1/models", tags=["models"], responses=errors(401, 403, 404, 409, 413, 422))


class ModelOut(BaseModel):
    id: str
    arch: str
    preset: str
    resolution: int
    class_names: list[str]
    production: bool
    steps: int
    metrics: dict[str, Any] | None
    dataset_snapshot_id: str | None
    parent_id: str | None
    job_id: str | None
    created_at: datetime
    promoted_at: datetime | None
    grid_url: str | None = None
    loss_curve_url: str | None = None
    lineage: list[str] | None = None

    @classmethod
    def of(
        cls, v: ModelVersion, store: ObjectStore | None = None, lineage: list[str] | None = None
    ) -> ModelOut:
        urls = {}
        if store is not None:
            urls = {
                "grid_url": store.presign(v.grid_key) if v.grid_key else None,
                "loss_curve_url": store.presign(v.loss_curve_key) if v.loss_curve_key else None,
            }
        return cls(
            id=v.id,
            arch=v.arch,
            preset=v.preset,
            resolution=v.resolution,
            class_names=v.class_names,
            production=v.is_production,
            steps=v.steps,
            metrics=v.metrics,
            dataset_snapshot_id=v.dataset_snapshot_id,
            parent_id=v.parent_id,
            job_id=v.job_id,
            created_at=v.created_at,
            promoted_at=v.promoted_at,
            lineage=lineage,
            **urls,
        )


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None


@router.get("", response_model=ModelPage)
def list_models(
    _: ReadKey, session: SessionDep, limit: int = Query(50, ge=1, le=MAX_LIMIT), cursor: str | None = None
):
    try:
        rows, next_cursor = page(
            select(ModelVersion),
            session=session,
            time_col=ModelVersion.created_at,
            id_col=ModelVersion.id,
            limit=limit,
            cursor=cursor,
        )
    except BadCursor as exc:
        raise invalid("query", "cursor", msg=str(exc)) from exc
    return ModelPage(items=[ModelOut.of(v) for v in rows], next_cursor=next_cursor)


def _get(session, ref: str) -> ModelVersion:  # noqa: ANN001
    try:
        return registry.resolve_model(session=session, ref=ref)
    except registry.ModelNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, _: ReadKey, session: SessionDep, store: StoreDep):
    """A version by id, or `production`; `lineage` lists the parents it was fine-tuned from."""
    version = _get(session, model_id)
    lineage, parent = [], version.parent_id
    while parent and len(lineage) < 100:
        lineage.append(parent)
        parent = session.scalar(select(ModelVersion.parent_id).where(ModelVersion.id == parent))
    return ModelOut.of(version, store, lineage)


@router.post("/{model_id}/promote", response_model=ModelOut)
def promote_model(model_id: str, key: AdminKey, session: SessionDep):
    version = _get(session, model_id)
    promoted = registry.promote(
        session=session, version_id=version.id, reason=f"promoted by key {key.name}", job_id=version.job_id
    )
    return ModelOut.of(promoted)


def newest_models(key, session) -> list[ModelOut]:  # noqa: ANN001
    """The newest 50 versions as GET /v1/models answers them: the gallery's model lists and pickers."""
    return list_models(_=key, session=session, limit=50, cursor=None).items
