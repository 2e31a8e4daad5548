"""`atelier.generate_chunk`: one chunk of a generation job, on a GPU worker.

    lease the chunk unit ─> the indices of its range without a row ─> atelier.generation.batches.run_batches:
        generate a batch on the device ─ encode + upload the batch on the thread pool
        ─ upsert the previous batch's rows, count the chunk's rows, raise the job's progress
    ─> the unit ends; the last chunk to end adds the job's finalize unit (atelier.core.units)

Between batches the chunk stops when the job's cancel was asked or its lease was lost, and a bulk
chunk steps aside (back in line at once) when an interactive chunk waits. CUDA out-of-memory halves the
batch and carries on. An upload or a database write that meets an S3 or SQL fault is retried in place;
one that outlasts ATELIER_INFRA_RETRY_SECONDS gives the chunk back without using a delivery. A
re-delivered chunk regenerates only the indices without a row, byte-identical (seed + i, deterministic
encoding).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import select

from atelier.core import jobs, units
from atelier.core.db import session_scope
from atelier.core.models import Job, ModelVersion, WorkUnit
from atelier.core.params import GenerateParams
from atelier.core.queue import GENERATE_CHUNK
from atelier.core.storage import get_store
from atelier.generation import generated
from atelier.generation import postprocess as imaging
from atelier.generation.batches import run_batches
from atelier.generation.service import image_key
from atelier.tryon import renderer as tryon
from atelier.workers.celery_app import task
from atelier.workers.device import worker_device
from atelier.workers.leases import Cancelled, Lease, StepAside, lease_unit

log = logging.getLogger(__name__)

_models: OrderedDict[str, tuple] = OrderedDict()
_models_lock = threading.Lock()


@task(GENERATE_CHUNK)
def generate_chunk(unit_id: int) -> None:
    preload_model(unit_id)  # before the claim: the lease then covers generating, not imports
    with lease_unit(unit_id) as lease:
        if lease is not None:
            run_chunk(lease)


def device():  # noqa: ANN201
    import torch

    return torch.device(worker_device())


def preload_model(unit_id: int) -> None:
    try:
        with session_scope(readonly=True) as session:
            row = session.execute(
                select(Job.params, Job.status)
                .join(WorkUnit, WorkUnit.job_id == Job.id)
                .where(WorkUnit.id == unit_id)
            ).one_or_none()
        if row is not None and row.status not in jobs.TERMINAL:
            load_model(row.params["model_version"])
    except Exception:  # noqa: BLE001 - the chunk itself will meet (and classify) the same fault
        log.debug("could not preload the model of unit %s", unit_id, exc_info=True)


def load_model(version_id: str):  # noqa: ANN201
    """(G, config, class_names) of a model version, cached per process (two most recent)."""
    from atelier.gan.sampling import load_generator
    from atelier.gan.training import checkpoint_from_bytes

    with _models_lock:
        if version_id in _models:
            _models.move_to_end(version_id)
            return _models[version_id]
        with session_scope(readonly=True) as session:
            version = session.get(ModelVersion, version_id)
            if version is None:
                raise LookupError(f"model version {version_id} is gone")
            key = version.checkpoint_key
        model = load_generator(checkpoint_from_bytes(get_store().get(key)), device())
        _models[version_id] = model
        while len(_models) > 2:
            _models.popitem(last=False)
        return model


def run_chunk(lease: Lease, *, resume: bool = True) -> None:
    """Generate the chunk's missing images; with `resume=False` all of them (byte-identical)."""
    params = GenerateParams.model_validate(lease.params)
    start, count = lease.unit.spec["start"], lease.unit.spec["count"]
    stop = start + count
    G, _cfg, class_names = load_model(params.model_version)
    have = lease.sql(lambda s: generated.indices_in_range(s, lease.job_id, start, stop)) if resume else set()
    todo = [i for i in range(start, stop) if i not in have]
    categories = dict(zip(range(start, stop), params.categories_for(start, stop), strict=True))
    label_of = {name: i for i, name in enumerate(class_names)}
    store = get_store()

    def produce(indices: list[int]):  # noqa: ANN202
        from atelier.gan.sampling import to_hwc

        return to_hwc(sample(G, params, indices, [label_of[categories[i]] for i in indices]))

    template = tryon.template_of(params.postprocess)

    def encode(hwc, index: int) -> dict[str, Any]:  # noqa: ANN001
        row, data, prov = render(hwc, params, lease.job_id, index, categories[index])
        meta = {k.replace("_", "-"): str(v) for k, v in prov.items()}
        lease.retrying(
            lambda: store.put(
                row["key"], data, content_type=imaging.FORMATS[params.format][1], metadata=meta
            ),
            what=f"upload of {row['key']}",
        )
        row["tryon_key"] = None if template is None else store_tryon(store, lease, row, data, template)
        return row

    def consume(rows: list[dict[str, Any]]) -> None:
        def write(session) -> bool:  # noqa: ANN001
            generated.upsert_images(session, rows)
            done = len(generated.indices_in_range(session, lease.job_id, start, stop))
            return units.record_chunk_progress(
                session=session,
                unit_id=lease.unit.id,
                worker=lease.unit.worker,
                job_id=lease.job_id,
                done=done,
            )

        if not lease.sql(write, what="storing image rows"):
            lease.stopped.set()  # the lease went to another worker: it will redo what is missing

    def should_stop() -> str | None:
        if lease.should_stop:
            return "stop"
        if params.priority == "bulk" and lease.sql(lambda s: interactive_work_waiting(session=s)):
            return "yield"
        return None

    def on_batch_size(batch: int) -> None:
        spec = {**lease.unit.spec, "batch_size": batch}
        lease.sql(
            lambda s: units.set_spec(session=s, unit_id=lease.unit.id, worker=lease.unit.worker, spec=spec)
        )
        lease.event(
            "chunk_oom",
            f"chunk {lease.unit.seq}: CUDA out of memory; retrying with batches of {batch}",
            {"chunk": lease.unit.seq, "batch_size": batch},
        )

    batch = lease.unit.spec.get("batch_size") or (256 if device().type == "cuda" else 64)
    reason = run_batches(
        todo,
        produce=produce,
        encode=encode,
        consume=consume,
        batch=batch,
        stop=should_stop,
        on_batch_size=on_batch_size,
    )
    if reason == "yield":
        lease.event("chunk_yielded", f"chunk {lease.unit.seq} stepped aside for interactive work")
        raise StepAside("stepped aside for interactive work")
    if reason == "stop":
        raise Cancelled()


def store_tryon(store, lease: Lease, row: dict[str, Any], data: bytes, template: str) -> str | None:  # noqa: ANN001
    """The try-on preview of one encoded image, stored under a key that depends only on (job, index,
    template): a re-delivered chunk overwrites the same object. None for an image that is all backdrop."""
    try:
        preview = tryon.preview(
            data,
            category=row["category"],
            template=template,
            provenance=tryon.generated_provenance(
                job_id=row["job_id"],
                index=row["index"],
                seed=row["seed"],
                key=row["key"],
                sha256=row["sha256"],
                model_version=row["model_version_id"],
            ),
        )
    except ValueError:  # nothing to dress the body in; the image itself is still stored
        return None
    key = tryon.preview_key(row["job_id"], row["index"], template)
    lease.retrying(lambda: store.put(key, preview, content_type="image/png"), what=f"upload of {key}")
    return key


def interactive_work_waiting(*, session) -> bool:  # noqa: ANN001
    """Is an interactive chunk queued? Bulk chunks yield to it between batches: one worker polls its
    queues round-robin, so without this an interactive job would wait behind however many bulk chunks
    the worker happens to fetch first."""
    return (
        session.execute(
            select(WorkUnit.id)
            .where(WorkUnit.status == units.QUEUED, WorkUnit.queue == "generate.interactive")
            .limit(1)
        ).first()
        is not None
    )


def sample(G, params: GenerateParams, indices: list[int], labels: list[int]):  # noqa: ANN001, ANN201
    """uint8 [N, 3, R, R] for these image indices of the job, whatever its mode."""
    from atelier.gan.sampling import generate, interpolate, variations

    if params.mode == "sample":
        seeds = [params.seed + i for i in indices]
        return generate(
            G, seeds=seeds, labels=labels, truncation=params.truncation, batch_size=max(1, len(indices))
        )
    source = params.source
    assert source is not None
    if params.mode == "variations":
        # variation j depends only on (seed, j): generating the first max+1 and picking is exact
        out = variations(G, source.seed, labels[0], max(indices) + 1, source.strength, params.truncation)
    else:
        a, b = source.seeds
        out = interpolate(G, a, b, labels[0], params.count, params.truncation)
    return out[indices]


def provenance(params: GenerateParams, job_id: str, index: int, category: str) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "generator": imaging.GENERATOR,
        "model_version": params.model_version,
        "seed": params.image_seed(index),
        "job_id": job_id,
        "index": index,
        "category": category,
    }
    if params.mode != "sample":
        assert params.source is not None
        prov["mode"] = params.mode
        prov["source"] = ",".join(params.source.image_ids or [params.source.image_id or ""])
    return prov


def render(hwc, params: GenerateParams, job_id: str, index: int, category: str):  # noqa: ANN001, ANN201
    """(row, encoded bytes, provenance) of one image: post-processing, encoding and its row."""
    ext, _content_type, _ = imaging.FORMATS[params.format]
    prov = provenance(params, job_id, index, category)
    data, width, height = imaging.render(
        hwc,
        ops=params.postprocess,
        size=params.size,
        fmt=params.format,
        provenance=prov,
        quality=params.quality,
    )
    row = {
        "job_id": job_id,
        "index": index,
        "seed": prov["seed"],
        "category": category,
        "key": image_key(job_id, index, ext),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": params.format,
        "width": width,
        "height": height,
        "size_bytes": len(data),
        "model_version_id": params.model_version,
    }
    return row, data, prov
