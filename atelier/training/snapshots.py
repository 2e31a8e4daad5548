"""Dataset snapshots: the frozen list of catalogue images a training job trains on.

A snapshot is a row plus a JSON manifest in S3 (image id, sha256, category, key). Its fingerprint is
the hash of that list, so two jobs over the same catalogue share one snapshot, and with it the
prepared uint8 tensor file per resolution (`snapshots/{id}/dataset-{R}.pt`), built once by a worker.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atelier.core.models import CatalogueImage, DatasetSnapshot
from atelier.core.models.base import new_id
from atelier.core.storage import ObjectStore


class EmptySelection(ValueError):
    pass


def manifest_key(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}/manifest.json"


def tensor_key(snapshot_id: str, resolution: int) -> str:
    return f"snapshots/{snapshot_id}/dataset-{resolution}.pt"


def known_categories(*, session: Session) -> list[str]:
    return list(session.scalars(select(CatalogueImage.category).distinct().order_by(CatalogueImage.category)))


def freeze(*, session: Session, store: ObjectStore, categories: list[str] | None) -> DatasetSnapshot:
    """The snapshot of the catalogue now (restricted to `categories`), created or reused."""
    stmt = select(
        CatalogueImage.id,
        CatalogueImage.sha256,
        CatalogueImage.category,
        CatalogueImage.key,
        CatalogueImage.prepared_key,
    ).order_by(CatalogueImage.sha256)
    # a photo that could not be prepared (atelier/catalogue/tasks.py) would fail every training again
    stmt = stmt.where(CatalogueImage.rejected_reason.is_(None))
    if categories:
        stmt = stmt.where(CatalogueImage.category.in_(categories))
    rows = session.execute(stmt).all()
    if not rows:
        raise EmptySelection("the catalogue has no images for these categories")
    class_names = sorted({r.category for r in rows})
    fingerprint = hashlib.sha256(json.dumps([class_names, [r.sha256 for r in rows]]).encode()).hexdigest()
    existing = session.scalars(
        select(DatasetSnapshot).where(DatasetSnapshot.fingerprint == fingerprint)
    ).first()
    if existing is not None:
        return existing
    snapshot_id = new_id()
    manifest = {
        "class_names": class_names,
        "images": [
            {
                "id": r.id,
                "sha256": r.sha256,
                "category": r.category,
                "key": r.key,
                "prepared_key": r.prepared_key,
            }
            for r in rows
        ],
    }
    # the manifest is in S3 before the row that names it commits
    store.put(manifest_key(snapshot_id), json.dumps(manifest).encode(), content_type="application/json")
    snapshot = DatasetSnapshot(
        id=snapshot_id,
        fingerprint=fingerprint,
        image_count=len(rows),
        class_names=class_names,
        manifest_key=manifest_key(snapshot_id),
        tensor_keys={},
    )
    try:
        with session.begin_nested():
            session.add(snapshot)
    except IntegrityError:  # a concurrent job froze the same list first
        return session.scalars(
            select(DatasetSnapshot).where(DatasetSnapshot.fingerprint == fingerprint)
        ).one()
    return snapshot


def images_added_since(*, session: Session, snapshot: DatasetSnapshot | None) -> int:
    """Catalogue images that arrived after `snapshot` was frozen (all of them when there is none)."""
    stmt = select(func.count()).select_from(CatalogueImage)
    if snapshot is not None:
        stmt = stmt.where(CatalogueImage.created_at > snapshot.created_at)
    return int(session.scalar(stmt) or 0)
