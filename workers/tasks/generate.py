"""`atelier.generate_chunk`: one chunk of a generation job, on a GPU worker.

    claim the chunk (one UPDATE) ─> for each batch of missing indices:
        generate on the device  ─┐
        wait for the previous batch's encode+upload futures, upsert its rows, record progress
        hand this batch to the thread pool (os.cpu_count() threads: Pillow and zlib release the GIL)
    ─> last batch's rows ─> finish the chunk; the last open chunk of the job sends finalize

Between batches the chunk stops when the job's cancel was asked or its lease was lost, and a bulk chunk
steps aside (back to queued, re-sent) when an interactive chunk waits. CUDA out-of-memory halves the
batch and carries on. A re-delivered chunk regenerates only the indices without a row; with
`resume=False` it regenerates all of them, byte-identical (seed + i, deterministic encoding).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select

from core import chunks, generation, jobs
from core.chunks import ClaimedChunk
from core.config import get_settings
from core.db import session_scope
from core.models import GeneratedImage, Job, ModelVersion
from core.storage import get_store
from workers import imaging
from workers.celery_app import app
from workers.leases import worker_identity

log = logging.getLogger(__name__)

_models: OrderedDict[str, tuple] = OrderedDict()
_models_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


@app.task(name=generation.GENERATE_CHUNK, acks_late=True)
def generate_chunk(job_id: str, chunk_index: int) -> str:
    return run_chunk(job_id, chunk_index)


@app.task(name="atelier.generate_plan", acks_late=True)
def generate_plan(job_id: str) -> int:
    """The generate job's entry task (core.queue.JOB_ENTRY_TASKS): re-send its queued chunks."""
    with session_scope() as session:
        return chunks.resend_job(session=session, job_id=job_id)


def reconcile_generation() -> dict[str, int]:
    """Called by the reconciler on beat: stale chunks, lost chunk messages, unfinalized jobs."""
    with session_scope() as session:
        return chunks.reconcile(session=session, settings=get_settings())


def encode_pool() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():  # never reuse a pool across a fork
        # Encoding is CPU work (one thread per core would do), but each thread then waits for an S3
        # round trip; four per core keep every core encoding while puts are in flight.
        threads = 4 * (os.cpu_count() or 1)
        _pool, _pool_pid = ThreadPoolExecutor(threads, thread_name_prefix="encode"), os.getpid()
    return _pool


def device():  # noqa: ANN201
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(version_id: str):  # noqa: ANN201
    """(G, config, class_names) of a model version, cached per process (two most recent)."""
    from workers.gan.sampling import load_generator
    from workers.gan.training import checkpoint_from_bytes

    with _models_lock:
        if version_id in _models:
            _models.move_to_end(version_id)
            return _models[version_id]
        with session_scope() as session:
            version = session.get(ModelVersion, version_id)
            if version is None:
                raise LookupError(f"model version {version_id} is gone")
            key = version.checkpoint_key
        model = load_generator(checkpoint_from_bytes(get_store().get(key)), device())
        _models[version_id] = model
        while len(_models) > 2:
            _models.popitem(last=False)
        return model


class ChunkLease:
    """Heartbeats the chunk from a thread; `should_stop` turns true on cancel or a lost lease."""

    def __init__(self, chunk: ClaimedChunk, worker: str, every: float):
        self.chunk, self.worker, self.every = chunk, worker, every
        self.should_stop = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"chunk-{chunk.index}")

    def __enter__(self) -> ChunkLease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._done.wait(self.every):
            self.check()

    def check(self) -> bool:
        try:
            with session_scope() as session:
                if chunks.heartbeat_chunk(
                    session=session, job_id=self.chunk.job_id, index=self.chunk.index, worker=self.worker
                ):
                    self.should_stop = True
        except Exception:  # a missed beat is harmless; a stale lease is the reconciler's business
            log.exception("heartbeat failed for chunk %s/%s", self.chunk.job_id, self.chunk.index)
        return self.should_stop


def run_chunk(job_id: str, chunk_index: int, *, resume: bool = True) -> str:
    """Claim and run one chunk; returns what became of it (skipped, succeeded, cancelled, queued)."""
    settings = get_settings()
    worker = worker_identity()
    with session_scope() as session:
        job = session.get(Job, job_id)
        version_id = (job.params or {}).get("model_version") if job is not None else None
    if version_id and job.status not in jobs.TERMINAL:
        load_model(version_id)  # before the claim: the lease then covers generating, not imports
    with session_scope() as session:
        chunk = chunks.claim_chunk(
            session=session, job_id=job_id, index=chunk_index, worker=worker, settings=settings
        )
    if chunk is None:
        log.info("chunk %s/%s: not claimed (done, cancelled or owned by a live worker)", job_id, chunk_index)
        return "skipped"
    try:
        with ChunkLease(chunk, worker, settings.heartbeat_seconds) as lease:
            outcome = _run(chunk, lease, worker, resume=resume)
    except (Exception, SoftTimeLimitExceeded) as exc:
        retry = chunk.deliveries < settings.max_deliveries
        reason = (
            "time limit exceeded"
            if isinstance(exc, SoftTimeLimitExceeded)
            else f"{type(exc).__name__}: {exc}"
        )
        with session_scope() as session:
            chunks.finish_chunk(
                session=session,
                job_id=job_id,
                index=chunk_index,
                worker=worker,
                status=chunks.CHUNK_QUEUED if retry else chunks.CHUNK_FAILED,
                error=reason,
            )
            jobs.add_event(
                session=session,
                job_id=job_id,
                kind="chunk_retried" if retry else "chunk_failed",
                message=f"chunk {chunk_index} {'will be retried' if retry else 'failed'}: {reason}",
                data={"chunk": chunk_index, "delivery": chunk.deliveries},
            )
        raise
    with session_scope() as session:
        chunks.finish_chunk(session=session, job_id=job_id, index=chunk_index, worker=worker, status=outcome)
    return outcome


def _todo(chunk: ClaimedChunk, resume: bool) -> list[int]:
    indices = range(chunk.start, chunk.start + chunk.count)
    if not resume:
        return list(indices)
    with session_scope() as session:
        have = set(
            session.scalars(
                select(GeneratedImage.index).where(
                    GeneratedImage.job_id == chunk.job_id,
                    GeneratedImage.index >= chunk.start,
                    GeneratedImage.index < chunk.start + chunk.count,
                )
            )
        )
    return [i for i in indices if i not in have]


def _run(chunk: ClaimedChunk, lease: ChunkLease, worker: str, *, resume: bool) -> str:
    import torch

    params = chunk.params
    G, _cfg, class_names = load_model(params["model_version"])
    todo = _todo(chunk, resume)
    categories = dict(
        zip(
            range(chunk.start, chunk.start + chunk.count),
            generation.categories_for(params, chunk.start, chunk.start + chunk.count),
            strict=True,
        )
    )
    label_of = {name: i for i, name in enumerate(class_names)}
    batch = chunk.batch_size or (256 if device().type == "cuda" else 64)
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    pending: list[Future] | None = None
    outcome = chunks.CHUNK_SUCCEEDED
    pos = 0
    while pos < len(todo):
        if lease.should_stop:
            outcome = chunks.CHUNK_CANCELLED
            break
        if pos and params["priority"] == "bulk" and _interactive_waiting():
            outcome = chunks.CHUNK_QUEUED
            lease_event(chunk, "chunk_yielded", f"chunk {chunk.index} stepped aside for interactive work")
            break
        indices = todo[pos : pos + batch]
        try:
            images = sample(G, params, indices, [label_of[categories[i]] for i in indices])
        except oom:
            if batch == 1:
                raise
            torch.cuda.empty_cache()
            batch = max(1, batch // 2)
            _record_batch_size(chunk, batch)
            continue
        from workers.gan.sampling import to_hwc

        hwc = to_hwc(images)
        futures = [
            encode_pool().submit(_encode_and_upload, hwc[k], params, chunk.job_id, i, categories[i])
            for k, i in enumerate(indices)
        ]
        if pending is not None:
            _store_rows(chunk.job_id, pending)
        pending = futures
        pos += len(indices)
    if pending is not None:
        _store_rows(chunk.job_id, pending)
    return outcome


def _interactive_waiting() -> bool:
    with session_scope() as session:
        return chunks.interactive_work_waiting(session=session)


def lease_event(chunk: ClaimedChunk, kind: str, message: str, data: dict | None = None) -> None:
    with session_scope() as session:
        jobs.add_event(
            session=session,
            job_id=chunk.job_id,
            kind=kind,
            message=message,
            data={"chunk": chunk.index, **(data or {})},
        )


def _record_batch_size(chunk: ClaimedChunk, batch: int) -> None:
    from core.models import GenerationChunk

    with session_scope() as session:
        row = session.scalars(
            select(GenerationChunk).where(
                GenerationChunk.job_id == chunk.job_id, GenerationChunk.index == chunk.index
            )
        ).one()
        row.batch_size = batch
        jobs.add_event(
            session=session,
            job_id=chunk.job_id,
            kind="chunk_oom",
            message=f"chunk {chunk.index}: CUDA out of memory; retrying with batches of {batch}",
            data={"chunk": chunk.index, "batch_size": batch},
        )


def sample(G, params: dict, indices: list[int], labels: list[int]):  # noqa: ANN001, ANN201
    """uint8 [N, 3, R, R] for these image indices of the job, whatever its mode."""
    from workers.gan.sampling import generate, interpolate, variations

    mode, truncation = params["mode"], params["truncation"]
    if mode == "sample":
        seeds = [params["seed"] + i for i in indices]
        return generate(G, seeds=seeds, labels=labels, truncation=truncation, batch_size=max(1, len(indices)))
    source = params["source"]
    if mode == "variations":
        # variation j depends only on (seed, j): generating the first max+1 and picking is exact
        out = variations(G, source["seed"], labels[0], max(indices) + 1, source["strength"], truncation)
    else:
        a, b = source["seeds"]
        out = interpolate(G, a, b, labels[0], params["count"], truncation)
    return out[indices]


def provenance(params: dict, job_id: str, index: int, category: str) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "generator": imaging.GENERATOR,
        "model_version": params["model_version"],
        "seed": image_seed(params, index),
        "job_id": job_id,
        "index": index,
        "category": category,
    }
    if params["mode"] != "sample":
        prov["mode"] = params["mode"]
        prov["source"] = ",".join(params["source"].get("image_ids") or [params["source"].get("image_id", "")])
    return prov


def image_seed(params: dict, index: int) -> int:
    if params["mode"] == "sample":
        return params["seed"] + index
    return params["source"].get("seed", (params["source"].get("seeds") or [0])[0])


def _encode_and_upload(hwc, params: dict, job_id: str, index: int, category: str) -> dict[str, Any]:  # noqa: ANN001
    fmt = params["format"]
    ext, content_type, _ = imaging.FORMATS[fmt]
    prov = provenance(params, job_id, index, category)
    data, width, height = imaging.render(
        hwc,
        ops=params["postprocess"],
        size=params["size"],
        fmt=fmt,
        provenance=prov,
        quality=params["quality"],
    )
    key = generation.image_key(job_id, index, ext)
    get_store().put(
        key,
        data,
        content_type=content_type,
        metadata={k.replace("_", "-"): str(v) for k, v in prov.items()},
    )
    return {
        "job_id": job_id,
        "index": index,
        "seed": prov["seed"],
        "category": category,
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": fmt,
        "width": width,
        "height": height,
        "size_bytes": len(data),
        "model_version_id": params["model_version"],
    }


def _store_rows(job_id: str, futures: list[Future]) -> None:
    rows = [f.result() for f in futures]
    with session_scope() as session:
        chunks.upsert_images(session, rows)
        chunks.record_progress(session=session, job_id=job_id)
