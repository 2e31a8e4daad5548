"""`atelier.ingest`: prepare newly uploaded catalogue photos for training (upright, padded square,
Lanczos-resized PNG in S3), or import a data set ZIP (import_run.py), which prepares the photos
it adds the same way. Idempotent: the prepared key derives from the content hash, and a photo
already prepared is skipped, so a re-delivered message redoes nothing."""

from __future__ import annotations

from PIL import Image
from sqlalchemy import or_, select

from atelier.catalogue.import_run import run_import
from atelier.catalogue.photos import RejectedImage, prepare_for_training
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
    """Prepare those of `image_ids` not yet prepared at `size` nor rejected; how many were.

    Each try is counted in SQL before Pillow sees the photo, and a prepared photo is recorded at once,
    so a photo that kills its worker (whatever the reason) uses up only its own tries: after
    ATELIER_MAX_PREPARE_ATTEMPTS it is `rejected` without being opened again, and the photos around it
    are not blamed. A photo Pillow refuses is rejected at the first try."""
    settings = get_settings()
    todo = lease.sql(
        lambda s: s.execute(
            select(CatalogueImage.id, CatalogueImage.sha256, CatalogueImage.key).where(
                CatalogueImage.id.in_(image_ids),
                CatalogueImage.rejected_reason.is_(None),
                or_(
                    CatalogueImage.prepared_key.is_(None),
                    ~CatalogueImage.prepared_key.startswith(f"catalogue/prepared/{size}/"),
                ),
            )
        ).all()
    )
    prepared = 0
    for image_id, sha256, original in todo:  # S3 and Pillow work outside any SQL transaction
        tries = lease.sql(lambda s, i=image_id: _count_try(s, i))
        if tries > settings.max_prepare_attempts:
            reason = f"could not be prepared in {tries - 1} tries (ATELIER_MAX_PREPARE_ATTEMPTS)"
            lease.sql(lambda s, i=image_id, r=reason: _mark(s, i, rejected_reason=r))
            continue
        key = prepared_key(sha256, size)
        data = lease.retrying(lambda o=original: store.get(o), what="photo read")
        try:
            clean = prepare_for_training(
                data, size, max_pixels=settings.max_image_pixels, max_aspect=settings.max_aspect_ratio
            )
        except (RejectedImage, OSError, ValueError, MemoryError, Image.DecompressionBombError) as exc:
            reason = str(exc)[:500]
            lease.sql(lambda s, i=image_id, r=reason: _mark(s, i, rejected_reason=r))
            lease.event("photo_rejected", f"photo {image_id} rejected: {reason}", {"image_id": image_id})
            continue
        lease.retrying(lambda k=key, d=clean: store.put(k, d, content_type="image/png"), what="prepared put")
        lease.sql(lambda s, i=image_id, k=key: _mark(s, i, prepared_key=k))
        prepared += 1
    return prepared


def _count_try(session, image_id: str) -> int:  # noqa: ANN001
    """One more preparation try of the photo; the number of tries so far, this one included."""
    image = session.get(CatalogueImage, image_id)
    image.prepare_attempts = (image.prepare_attempts or 0) + 1
    return image.prepare_attempts


def _mark(session, image_id: str, *, prepared_key: str | None = None, rejected_reason: str | None = None):  # noqa: ANN001, ANN202
    image = session.get(CatalogueImage, image_id)
    if prepared_key is not None:
        image.prepared_key, image.prepared_at = prepared_key, utcnow()
    if rejected_reason is not None:
        image.rejected_reason = rejected_reason
