"""`atelier.ingest`: prepare newly uploaded catalogue photos for training (upright, padded square,
Lanczos-resized PNG in S3). Idempotent: the prepared key derives from the content hash, and a photo
already prepared is skipped, so a re-delivered message redoes nothing."""

from __future__ import annotations

from sqlalchemy import or_, select

from core.config import get_settings
from core.db import session_scope
from core.imaging import prepare_for_training
from core.models import CatalogueImage, Job, utcnow
from core.storage import get_store
from workers.celery_app import app
from workers.leases import Cancelled, JobLease

BATCH = 20  # photos per progress update


def prepared_key(sha256: str, size: int) -> str:
    return f"catalogue/prepared/{size}/{sha256[:2]}/{sha256}.png"


@app.task(name="atelier.ingest", acks_late=True)
def ingest(job_id: str) -> None:
    with JobLease.claim(job_id) as lease:
        if lease is None:
            return
        run_ingest(lease)


def run_ingest(lease: JobLease) -> None:
    settings = get_settings()
    store = get_store()
    size = settings.prepared_size
    with session_scope() as session:
        image_ids = list(session.get(Job, lease.job_id).params.get("image_ids", []))
    total = len(image_ids)
    done = 0
    for start in range(0, total, BATCH):
        batch = image_ids[start : start + BATCH]
        with session_scope() as session:
            todo = session.execute(
                select(CatalogueImage.id, CatalogueImage.sha256, CatalogueImage.key).where(
                    CatalogueImage.id.in_(batch),
                    or_(
                        CatalogueImage.prepared_key.is_(None),
                        ~CatalogueImage.prepared_key.startswith(f"catalogue/prepared/{size}/"),
                    ),
                )
            ).all()
        prepared = {}
        for image_id, sha256, original in todo:  # S3 work outside any SQL transaction
            key = prepared_key(sha256, size)
            store.put(key, prepare_for_training(store.get(original), size), content_type="image/png")
            prepared[image_id] = key
        if prepared:
            with session_scope() as session:
                for image in session.scalars(select(CatalogueImage).where(CatalogueImage.id.in_(prepared))):
                    image.prepared_key, image.prepared_at = prepared[image.id], utcnow()
        done += len(batch)
        lease.progress(done, total)
        if lease.should_stop:
            raise Cancelled()
    lease.succeed({"prepared": total, "size": size}, message=f"prepared {total} photos at {size} px")
