"""Dataset snapshots: the frozen list of catalogue images a training job trains on.

A snapshot is a row plus a JSON manifest in S3 (image id, sha256, category, key). Its fingerprint is
the hash of that list, so two jobs over the same catalogue share one snapshot, and with it the
prepared uint8 tensor file per resolution (`snapshots/{id}/dataset-{R}.pt`), built once by a worker.

Freezing is two steps so that no write transaction spans the catalogue read and the S3 PUT (on
SQLite that would hold the only write lock for both): `prepare` reads in a read-only session and
PUTs the manifest under an id derived from the fingerprint (idempotent), `record` inserts the row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atelier.core.models import CatalogueImage, DatasetSnapshot
from atelier.core.storage import ObjectStore


class EmptySelection(ValueError):
    pass


def manifest_key(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}/manifest.json"


def tensor_key(snapshot_id: str, resolution: int) -> str:
    return f"snapshots/{snapshot_id}/dataset-{resolution}.pt"


def known_categories(*, session: Session) -> list[str]:
    return list(session.scalars(select(CatalogueImage.category).distinct().order_by(CatalogueImage.category)))


@dataclass(frozen=True)
class Frozen:
    """What freezing found, before any write: the list's fingerprint, its categories, and the
    snapshot's id (derived from the fingerprint, so two concurrent freezes of one list PUT the same
    manifest to the same key), with the catalogue's categories for the request's validation."""

    fingerprint: str
    class_names: list[str]
    image_count: int
    snapshot_id: str
    manifest_put: bool  # False: a snapshot of this list existed already, nothing was stored
    known: list[str]


def reader(session: Session) -> Session:
    """A read-only session on `session`'s database: on SQLite a DEFERRED transaction, which takes no
    write lock, where the submitting session's first statement would take it (BEGIN IMMEDIATE)."""
    return Session(bind=session.get_bind().execution_options(sqlite_begin="DEFERRED"))


def prepare(*, session: Session, store: ObjectStore, categories: list[str] | None) -> Frozen:
    """The catalogue read and the manifest PUT of a freeze, outside any write transaction: the reads
    in a read-only session of their own, ended before the PUT. EmptySelection when nothing matches."""
    with reader(session) as r:
        known = known_categories(session=r)
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
        rows = r.execute(stmt).all()
        class_names = sorted({row.category for row in rows})
        fingerprint = hashlib.sha256(
            json.dumps([class_names, [row.sha256 for row in rows]]).encode()
        ).hexdigest()
        existing = r.scalar(select(DatasetSnapshot.id).where(DatasetSnapshot.fingerprint == fingerprint))
        r.rollback()  # a read: ended before the S3 PUT
    if not rows:
        raise EmptySelection("the catalogue has no images for these categories")
    snapshot_id = fingerprint[:32]
    if set(categories or ()) - set(known):  # the request will be refused: store nothing for it
        return Frozen(fingerprint, class_names, len(rows), snapshot_id, False, known)
    if existing is None:
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
    return Frozen(fingerprint, class_names, len(rows), snapshot_id, existing is None, known)


def record(
    *, session: Session, store: ObjectStore, frozen: Frozen, categories: list[str] | None
) -> DatasetSnapshot:
    """The snapshot row of a prepared freeze, inserted or found: a short write."""
    existing = session.scalars(
        select(DatasetSnapshot).where(DatasetSnapshot.fingerprint == frozen.fingerprint)
    ).first()
    if existing is not None:
        return existing
    if not frozen.manifest_put:  # its snapshot existed when it was read, and is gone: freeze again
        frozen = prepare(session=session, store=store, categories=categories)
    snapshot = DatasetSnapshot(
        id=frozen.snapshot_id,
        fingerprint=frozen.fingerprint,
        image_count=frozen.image_count,
        class_names=frozen.class_names,
        manifest_key=manifest_key(frozen.snapshot_id),
        tensor_keys={},
    )
    try:
        with session.begin_nested():
            session.add(snapshot)
    except IntegrityError:  # a concurrent job froze the same list first
        return session.scalars(
            select(DatasetSnapshot).where(DatasetSnapshot.fingerprint == frozen.fingerprint)
        ).one()
    return snapshot


def freeze(*, session: Session, store: ObjectStore, categories: list[str] | None) -> DatasetSnapshot:
    """The snapshot of the catalogue now (restricted to `categories`), created or reused."""
    frozen = prepare(session=session, store=store, categories=categories)
    return record(session=session, store=store, frozen=frozen, categories=categories)


def images_added_since(*, session: Session, snapshot: DatasetSnapshot | None) -> int:
    """Catalogue images that arrived after `snapshot` was frozen (all of them when there is none)."""
    stmt = select(func.count()).select_from(CatalogueImage)
    if snapshot is not None:
        stmt = stmt.where(CatalogueImage.created_at > snapshot.created_at)
    return int(session.scalar(stmt) or 0)
