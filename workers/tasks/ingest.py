"""`atelier.ingest`: prepare newly uploaded catalogue photos for training (upright, padded square,
Lanczos-resized PNG in S3). Idempotent: the prepared key derives from the content hash, and a photo
already prepared is skipped, so a re-delivered message redoes nothing."""

from __future__ import annotations

from sqlalchemy import select

from core.config import get_settings
from core.db import session_scope
from core.imaging import prepare_for_training
from core.models import CatalogueImage, Job, utcnow
from core.storage import get_store
from workers.celery_app import app
from workers.leases import Cancelled, JobLease


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
    for start in range(0, total, 50):
        batch = image_ids[start : start + 50]
        with session_scope() as session:
            images = list(session.scalars(select(CatalogueImage).where(CatalogueImage.id.in_(batch))))
            for image in images:
                key = prepared_key(image.sha256, size)
                if image.prepared_key != key:
                    store.put(key, prepare_for_training(store.get(image.key), size), content_type="image/png")
                    image.prepared_key = key
                    image.prepared_at = utcnow()
        done += len(batch)
        lease.progress(done, total)
        if lease.should_stop:
            raise Cancelled()
    lease.succeed({"prepared": total, "size": size}, message=f"prepared {total} photos at {size} px")
