"""`atelier.ingest`: prepare newly uploaded catalogue photos for training (upright, padded square,
Lanczos-resized PNG in S3), or import a data set ZIP (import_run.py), which prepares the photos
it adds the same way. Idempotent: the prepared key derives from the content hash, and a photo
already prepared is skipped, so a re-delivered message redoes nothing."""

from __future__ import annotations

from sqlalchemy import or_, select

from atelier.catalogue.import_run import run_import
from atelier.catalogue.photos import prepare_for_training
from atelier.core import units
from atelier.core.config import get_settings
from atelier.core.models import CatalogueImage, utcnow
from atelier.core.params import IngestParams
from atelier.core.queue import INGEST
from atelier.core.storage import ObjectStore, get_store
from atelier.workers.celery_app import task
from atelier.workers.leases import Cancelled, Lease, lease_unit

BATCH = 20  # photos per progress update


def prepared_key(sha256: str, size: int) -> str:
    return f"catalogue/prepared/{size}/{sha256[:2]}/{sha256}.png"


@task(INGEST)
def ingest(unit_id: int) -> None:
    with lease_unit(unit_id) as lease:
        if lease is not None:
            run_ingest(lease)


def run_ingest(lease: Lease) -> None:
    params = IngestParams.model_validate(lease.params)
    settings = get_settings()
    store = get_store()
    size = settings.prepared_size
    if params.source is not None:
        run_import(
            lease,
            params.source,
            prepare=lambda ids: prepare_photos(lease, store=store, size=size, image_ids=ids),
        )
        return
    image_ids = params.image_ids
    total = len(image_ids)
    done = 0
    for start in range(0, total, BATCH):
        batch = image_ids[start : start + BATCH]
        prepare_photos(lease, store=store, size=size, image_ids=batch)
        done += len(batch)
        lease.progress(done, total)
        if lease.should_stop:
            raise Cancelled()
    lease.succeed(
        then=lambda session, job: units.end_job(
            session=session,
            job=job,
            to="succeeded",
            result={"prepared": total, "size": size},
            message=f"prepared {total} photos at {size} px",
        )
    )


def prepare_photos(lease: Lease, *, store: ObjectStore, size: int, image_ids: list[str]) -> int:
    """Prepare those of `image_ids` not yet prepared at `size`; how many were."""
    todo = lease.sql(
        lambda s: s.execute(
            select(CatalogueImage.id, CatalogueImage.sha256, CatalogueImage.key).where(
                CatalogueImage.id.in_(image_ids),
                or_(
                    CatalogueImage.prepared_key.is_(None),
                    ~CatalogueImage.prepared_key.startswith(f"catalogue/prepared/{size}/"),
                ),
            )
        ).all()
    )
    prepared = {}
    for image_id, sha256, original in todo:  # S3 and Pillow work outside any SQL transaction
        key = prepared_key(sha256, size)
        data = prepare_for_training(lease.retrying(lambda o=original: store.get(o), what="photo read"), size)
        lease.retrying(lambda k=key, d=data: store.put(k, d, content_type="image/png"), what="prepared put")
        prepared[image_id] = key
    if prepared:
        lease.sql(lambda s: _mark_prepared(s, prepared))
    return len(prepared)


def _mark_prepared(session, prepared: dict[str, str]) -> None:  # noqa: ANN001
    for image in session.scalars(select(CatalogueImage).where(CatalogueImage.id.in_(prepared))):
        image.prepared_key, image.prepared_at = prepared[image.id], utcnow()
