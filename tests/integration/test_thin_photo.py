"""A long, thin photo against the real workers: a 100000x400 PNG of a few KB that an older upload let in
(stored before ATELIER_MAX_ASPECT_RATIO existed). Padding it to a square would allocate 30 GB; the ingest
worker must survive it, reject the photo with a reason, and the next training of its category succeed
without it. The upload route refuses the same file with a 422 naming the limit."""

from __future__ import annotations

import hashlib
import io
import random

import httpx
import pytest
from PIL import Image

from atelier.catalogue.synthetic import catalogue_zip, make_catalogue

pytestmark = pytest.mark.integration


def thin_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (100_000, 400), (240, 240, 240)).save(out, "PNG")
    return out.getvalue()


def _peak_rss_mb(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()  # noqa: SIM115
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def _pool_pids(pid: int) -> list[int]:
    """The Celery worker's main process and its prefork children."""
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()  # noqa: SIM115
    return [pid, *(int(c) for c in children)]


def _store_behind_the_api(data: bytes, category: str) -> tuple[str, str]:
    """What an upload made before the aspect limit stored: the original in S3, its row, an ingest job."""
    from atelier.core import jobs, units
    from atelier.core.db import session_scope
    from atelier.core.models import CatalogueImage
    from atelier.core.params import IngestParams
    from atelier.core.storage import get_store

    sha = hashlib.sha256(data).hexdigest()
    key = f"catalogue/originals/{sha[:2]}/{sha}.png"
    get_store().put(key, data, content_type="image/png")
    with session_scope() as session:
        row = CatalogueImage(
            sha256=sha, category=category, filename="strip.png", key=key, format="PNG",
            width=100_000, height=400, size_bytes=len(data),
        )  # fmt: skip
        session.add(row)
        session.flush()
        job = jobs.create_job(
            session=session, kind="ingest", params=IngestParams(image_ids=[row.id]).model_dump(mode="json"),
            total=1,
        )  # fmt: skip
        units.start_work(session, job)
        return row.id, job.id


def test_the_upload_route_refuses_a_thin_photo_naming_the_limit(stack, admin):
    r = httpx.post(
        f"{stack.api_url}/v1/catalogue/images",
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        files=[("files", ("strip.png", thin_png(), "image/png"))],
        data={"category": "skirt"},
    )
    assert r.status_code == 422, r.text
    assert "ATELIER_MAX_ASPECT_RATIO" in r.json()["rejected"][0]["reason"]


def test_the_worker_survives_a_thin_photo_and_the_next_training_succeeds(stack, admin):
    upload = admin.upload(
        [("s.zip", catalogue_zip(make_catalogue(6, ("skirt",), seed=random.randrange(1 << 30))))]
    )
    assert admin.wait(upload["job"]["id"], timeout=120)["status"] == "succeeded"
    worker = stack.children["worker-cpu"].proc.pid
    pool_before = _pool_pids(worker)

    image_id, job_id = _store_behind_the_api(thin_png(), "skirt")
    done = admin.wait(job_id, timeout=120)
    assert done["status"] == "succeeded", done["error"]
    listed = admin.get("/v1/catalogue/images", category="skirt", limit=500)["items"]
    photo = next(i for i in listed if i["id"] == image_id)
    assert photo["prepared"] is False and "ATELIER_MAX_ASPECT_RATIO" in photo["rejected_reason"]
    # the same worker processes did it: none was killed and replaced
    assert _pool_pids(worker) == pool_before
    peak = max(_peak_rss_mb(p) for p in pool_before)
    print(f"ingest worker peak RSS through the thin photo: {peak:.0f} MB")
    assert peak < 1500, f"{peak:.0f} MB"

    job = admin.post(
        "/v1/training-jobs",
        json={"preset": "tiny", "resolution": 16, "steps": 10, "categories": ["skirt"], "promote": "never"},
    )
    trained = admin.wait(job["id"], timeout=300)
    assert trained["status"] == "succeeded", trained["error"]
    from atelier.core.db import session_scope
    from atelier.core.models import DatasetSnapshot
    from atelier.core.storage import get_store

    with session_scope(readonly=True) as session:
        snapshot = session.get(DatasetSnapshot, job["params"]["snapshot_id"])
        # every photo of the category but the strip (other tests of a shared stack may add skirts)
        assert snapshot.image_count == sum(1 for i in listed if i["rejected_reason"] is None)
        assert image_id not in get_store().get(snapshot.manifest_key).decode()
