"""`atelier.finalize_generation` and `atelier.deliver_webhook`, on the io queue.

Finalize runs when SQL shows no chunk of the job queued or running (sent by the last chunk, re-sent by
the reconciler). It is idempotent: the manifest and the archive are rebuilt from the rows and uploaded
under fixed keys, and only the first finalize to lock the job row records the outcome.

    rows by index ─> manifest.jsonl (temp file) ─> S3      (never the whole job in memory)
                     └─> images.zip (temp file, zipfile, a bounded window of S3 reads) ─> S3
    job -> succeeded | partially_succeeded (missing index ranges in result) | failed | cancelled
    webhook task sent after that commit; it retries with exponential backoff and records each attempt
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from core import generation, jobs, outbound, webhook_signing, webhooks
from core.chunks import CHUNK_OPEN, chunk_counts, iter_images
from core.config import get_settings
from core.db import session_factory, session_scope
from core.models import Job
from core.queue import send_after_commit
from core.storage import ObjectStore, get_store
from workers.celery_app import app

log = logging.getLogger(__name__)

ZIP_WINDOW = 32  # images fetched ahead while the archive is written
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same images make the same archive
WEBHOOK_MAX_RETRIES = 8


@app.task(name=generation.FINALIZE[0], acks_late=True)
def finalize_generation(job_id: str) -> str:
    return run_finalize(job_id)


def run_finalize(job_id: str) -> str:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in jobs.TERMINAL:
            return "ended"
        open_chunks = {s: n for s, n in chunk_counts(session, job_id).items() if s in CHUNK_OPEN}
        if open_chunks:
            return "not yet"
        params, total = dict(job.params), job.progress_total
    store = get_store()
    with tempfile.TemporaryDirectory(prefix="atelier-finalize-") as tmp:
        manifest_path = Path(tmp) / "manifest.jsonl"
        summary = write_manifest(job_id, manifest_path, total)
        mkey = generation.manifest_key(job_id)
        store.upload_file(mkey, str(manifest_path), content_type="application/x-ndjson")
        akey = None
        if params.get("archive"):
            zip_path = Path(tmp) / "images.zip"
            write_archive(store, manifest_path, zip_path, keep_alive=lambda: _keep_alive(job_id))
            akey = generation.archive_key(job_id)
            store.upload_file(akey, str(zip_path), content_type="application/zip")
    return _record_outcome(job_id, summary, mkey, akey)


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


def write_archive(store: ObjectStore, manifest_path: Path, zip_path: Path, *, keep_alive=None) -> int:  # noqa: ANN001
    """A ZIP of every image in the manifest (stored, not deflated: the images are compressed already)
    plus the manifest itself, written member by member to disk; at most ZIP_WINDOW images in memory."""
    n = 0
    last_beat = time.monotonic()
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
                if keep_alive and time.monotonic() - last_beat > 5:
                    keep_alive()
                    last_beat = time.monotonic()
        flush()
        with (
            zf.open(zipfile.ZipInfo("manifest.jsonl", ZIP_DATE), "w", force_zip64=True) as dst,
            manifest_path.open("rb") as src,
        ):
            shutil.copyfileobj(src, dst)
    return n


def _keep_alive(job_id: str) -> None:
    """A long archive keeps the reconciler from sending another finalize meanwhile."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.progress_info = {**(job.progress_info or {}), "_finalize_at": time.time()}


def _record_outcome(job_id: str, summary: dict, mkey: str, akey: str | None) -> str:
    with session_scope() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status in jobs.TERMINAL:
            return "ended"
        chunks = chunk_counts(session, job_id)
        result = {**summary, "chunks": chunks, "manifest_key": mkey, "archive_key": akey}
        generated, total = summary["generated"], summary["requested"]
        if job.cancel_requested:
            status, error = jobs.CANCELLED, None
        elif generated == total:
            status, error = jobs.SUCCEEDED, None
        elif generated == 0:
            status, error = jobs.FAILED, f"no image was generated ({chunks.get('failed', 0)} chunks failed)"
        else:
            status = jobs.PARTIALLY_SUCCEEDED
            error = (
                f"{total - generated} of {total} images missing after {chunks.get('failed', 0)} chunks failed"
            )
        if job.status == jobs.QUEUED and status in (jobs.SUCCEEDED, jobs.PARTIALLY_SUCCEEDED):
            jobs.transition(session=session, job=job, to=jobs.RUNNING)
        if job.status == jobs.RUNNING:
            jobs.set_progress(session=session, job=job, done=generated)
        jobs.transition(
            session=session,
            job=job,
            to=status,
            result=result,
            error=error,
            message=f"{generated}/{total} images; manifest {mkey}" + (f", archive {akey}" if akey else ""),
        )
        if job.params.get("webhook_url"):
            send_after_commit(
                session,
                generation.DELIVER_WEBHOOK[0],
                kwargs={"job_id": job_id},
                queue=generation.DELIVER_WEBHOOK[1],
            )
    return status


@app.task(bind=True, name=generation.DELIVER_WEBHOOK[0], acks_late=True, max_retries=WEBHOOK_MAX_RETRIES)
def deliver_webhook(self, job_id: str) -> str:  # noqa: ANN001
    attempt = self.request.retries + 1
    outcome, retry_in = run_webhook(job_id, attempt, last_attempt=attempt > WEBHOOK_MAX_RETRIES)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)
    return outcome


def backoff(attempt: int) -> float:
    return min(2.0 ** (attempt - 1), 600.0)


def run_webhook(job_id: str, attempt: int, *, last_attempt: bool = False) -> tuple[str, float | None]:
    """One delivery attempt; returns (outcome, seconds until the next attempt or None)."""
    settings = get_settings()
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or not (job.params or {}).get("webhook_url"):
            return "no webhook", None
        url, body = job.params["webhook_url"], webhooks.body_of(job)
        headers = webhook_signing.headers_for_job(session, job, body, settings, now=time.time())
    outcome = outbound.post_webhook(
        url, body, headers, settings=settings, timeout=settings.webhook_timeout_seconds
    )
    # events are readable by other keys: the host only (paths carry tokens), a category, never raw errors
    shown = outbound.redact_url(url)
    if not outcome.delivered:
        retry = outcome.retryable and not last_attempt
        with session_scope() as session:
            jobs.add_event(
                session=session,
                job_id=job_id,
                kind="webhook_failed",
                message=f"webhook attempt {attempt} to {shown} failed: {outcome.category}"
                + (f"; retrying in {backoff(attempt):.0f} s" if retry else "; giving up"),
                data={"attempt": attempt, "url": shown, "retry": retry, "category": outcome.category},
            )
        return "failed", backoff(attempt) if retry else None
    with session_scope() as session:
        jobs.add_event(
            session=session,
            job_id=job_id,
            kind="webhook_delivered",
            message=f"webhook delivered to {shown} (HTTP {outcome.status_code}) on attempt {attempt}",
            data={"attempt": attempt, "url": shown, "status": outcome.status_code},
        )
    return "delivered", None
