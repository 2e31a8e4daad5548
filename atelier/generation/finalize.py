"""`atelier.finalize_generation`, on the io queue: the finalize unit of a generation job.

Its unit is added (atelier.core.units) by the last chunk to end, or by the reconciler. It is idempotent: the
manifest and the archive are rebuilt from the rows and uploaded under fixed keys, and the outcome is
recorded only by the lease holder, with the job row locked.

    rows by index ─> manifest.jsonl (temp file) ─> S3      (never the whole job in memory)
                     └─> images.zip (temp file, zipfile, a bounded window of S3 reads) ─> S3
    job -> succeeded | partially_succeeded (missing index ranges in result) | failed | cancelled
           (a cancelled job whose images all exist ends succeeded: the cancel came too late)

S3 and SQL faults are retried in place, then the unit is given back (atelier.core.faults); an error of its own
is retried up to ATELIER_FINALIZE_MAX_ATTEMPTS times, with an event each, then the job ends `failed`
with the reason and its images stay listed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from atelier.core import jobs, units
from atelier.core.db import session_factory
from atelier.core.models import Job, WorkUnit
from atelier.core.params import GenerateParams
from atelier.core.queue import FINALIZE
from atelier.core.scratch import scratch_dir
from atelier.core.storage import ObjectStore, get_store
from atelier.generation import service as generation
from atelier.generation.generated import iter_images
from atelier.workers.celery_app import task
from atelier.workers.leases import Lease, lease_unit

log = logging.getLogger(__name__)

ZIP_WINDOW = 32  # images fetched ahead while the archive is written
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same images make the same archive


@task(FINALIZE)
def finalize_generation(unit_id: int) -> None:
    with lease_unit(unit_id) as lease:
        if lease is not None:
            run_finalize(lease)


def run_finalize(lease: Lease) -> None:
    job_id = lease.job_id
    params = GenerateParams.model_validate(lease.params)
    store = get_store()
    with scratch_dir("atelier-finalize-") as tmp:
        manifest_path = Path(tmp) / "manifest.jsonl"
        summary = lease.retrying(lambda: write_manifest(job_id, manifest_path, params.count), what="manifest")
        mkey = generation.manifest_key(job_id)
        lease.retrying(
            lambda: store.upload_file(mkey, str(manifest_path), content_type="application/x-ndjson"),
            what="manifest upload",
        )
        akey = None
        if params.archive:
            zip_path = Path(tmp) / "images.zip"
            lease.retrying(
                lambda: write_archive(store, manifest_path, zip_path, should_stop=lambda: lease.should_stop),
                what="archive",
            )
            akey = generation.archive_key(job_id)
            lease.retrying(
                lambda: store.upload_file(akey, str(zip_path), content_type="application/zip"),
                what="archive upload",
            )
    lease.succeed(then=lambda session, job: record_outcome(session, job, summary, mkey, akey))


def write_manifest(job_id: str, path: Path, total: int) -> dict[str, Any]:
    """Stream the job's rows (keyset pages, a read-only session) into a JSONL file."""
    generated, size_bytes, expected = 0, 0, 0
    missing: list[list[int]] = []
    session = session_factory(readonly=True)()
    try:
        with path.open("w") as f:
            for row in iter_images(session, job_id):
                line = {
                    "index": row.index,
                    "seed": row.seed,
                    "category": row.category,
                    "key": row.key,
                    "sha256": row.sha256,
                    "width": row.width,
                    "height": row.height,
                    "format": row.format,
                    "size_bytes": row.size_bytes,
                    "model_version": row.model_version_id,
                }
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
                if row.index > expected:
                    missing.append([expected, row.index - 1])
                expected = row.index + 1
                generated += 1
                size_bytes += row.size_bytes
    finally:
        session.close()
    if expected < total:
        missing.append([expected, total - 1])
    return {"generated": generated, "requested": total, "missing": missing, "bytes": size_bytes}


def write_archive(store: ObjectStore, manifest_path: Path, zip_path: Path, *, should_stop=None) -> int:  # noqa: ANN001
    """A ZIP of every image in the manifest (stored, not deflated: the images are compressed already)
    plus the manifest itself, written member by member to disk; at most ZIP_WINDOW images in memory."""
    n = 0
    with (
        zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
        ThreadPoolExecutor(8) as pool,
        manifest_path.open() as manifest,
    ):
        window: list[dict] = []

        def flush() -> None:
            for entry, data in zip(window, pool.map(store.get, [e["key"] for e in window]), strict=True):
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise ValueError(f"{entry['key']} does not match its recorded sha256")
                zf.writestr(zipfile.ZipInfo(entry["key"].rsplit("/", 1)[-1], ZIP_DATE), data)
            window.clear()

        for line in manifest:
            window.append(json.loads(line))
            n += 1
            if len(window) >= ZIP_WINDOW:
                flush()
                if should_stop is not None and should_stop():
                    raise RuntimeError("the finalize lease went to another worker")
        flush()
        with (
            zf.open(zipfile.ZipInfo("manifest.jsonl", ZIP_DATE), "w", force_zip64=True) as dst,
            manifest_path.open("rb") as src,
        ):
            shutil.copyfileobj(src, dst)
    return n


def chunk_counts(session, job_id: str) -> dict[str, int]:  # noqa: ANN001
    rows = session.execute(
        select(WorkUnit.status, func.count())
        .where(WorkUnit.job_id == job_id, WorkUnit.kind == "chunk")
        .group_by(WorkUnit.status)
    ).all()
    return {status: n for status, n in rows}


def record_outcome(session, job: Job, summary: dict, mkey: str, akey: str | None) -> None:  # noqa: ANN001
    """The job's end, in the finalize unit's own transaction (the job row is locked by then)."""
    chunks = chunk_counts(session, job.id)
    result = {**summary, "chunks": chunks, "manifest_key": mkey, "archive_key": akey}
    generated, total = summary["generated"], summary["requested"]
    if generated == total:
        status, error = jobs.SUCCEEDED, None  # a cancel that came after the last image changes nothing
    elif job.cancel_requested:
        status, error = jobs.CANCELLED, None
    elif generated == 0:
        status, error = jobs.FAILED, f"no image was generated ({chunks.get('failed', 0)} chunks failed)"
    else:
        status = jobs.PARTIALLY_SUCCEEDED
        error = f"{total - generated} of {total} images missing after {chunks.get('failed', 0)} chunks failed"
    job.progress_done = generated
    units.end_job(
        session=session,
        job=job,
        to=status,
        result=result,
        error=error,
        message=f"{generated}/{total} images; manifest {mkey}" + (f", archive {akey}" if akey else ""),
    )
