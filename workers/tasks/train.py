"""`atelier.train_segment`: one bounded segment of a training job on the `train` queue.

    claim job ─ load dataset tensor (S3, built once per snapshot and resolution)
              ─ load the newest checkpoint of this job from S3 (or start / fine-tune)
              ─ train for at most ATELIER_TRAIN_SEGMENT_SECONDS, progress at most once a second
              ─ write checkpoint, keep the newest few
              ─ steps left? release the lease and queue the next segment : evaluate, register, gate

A worker killed mid-segment loses only that segment: the reconciler re-queues the job and the next
segment resumes from the last checkpoint, bit for bit (the checkpoint carries every RNG state).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from core import jobs, registry, snapshots
from core.config import get_settings
from core.db import session_scope
from core.models import DatasetSnapshot, Job, ModelVersion
from core.models.base import new_id
from core.queue import TRAIN_SEGMENT, send_after_commit
from core.storage import ObjectStore, get_store
from workers.celery_app import app
from workers.leases import Cancelled, JobLease

log = logging.getLogger(__name__)
_datasets: dict[str, dict] = {}  # S3 key -> dataset; immutable objects, so a cache is safe


@app.task(name="atelier.train_segment", acks_late=True)
def train_segment(job_id: str) -> None:
    with JobLease.claim(job_id) as lease:
        if lease is None:
            return
        run_segment(lease)


def checkpoint_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def latest_checkpoint_key(store: ObjectStore, job_id: str) -> str | None:
    keys = sorted(o["Key"] for o in store.list(checkpoint_prefix(job_id)))
    return keys[-1] if keys else None


def load_dataset(store: ObjectStore, snapshot: DatasetSnapshot, resolution: int) -> dict:
    from workers.gan.data import dataset_from_bytes, dataset_to_bytes, prepare_images

    key = snapshots.tensor_key(snapshot.id, resolution)
    if key in _datasets:
        return _datasets[key]
    if store.exists(key):
        dataset = dataset_from_bytes(store.get(key))
    else:
        manifest = json.loads(store.get(snapshot.manifest_key))
        names = manifest["class_names"]
        items = manifest["images"]
        with ThreadPoolExecutor(16) as pool:  # S3 latency, not CPU, is the limit here
            blobs = list(pool.map(lambda i: store.get(i["prepared_key"] or i["key"]), items))
        dataset = prepare_images(
            [(b, names.index(i["category"])) for b, i in zip(blobs, items, strict=True)], resolution
        )
        dataset["class_names"] = names
        store.put(key, dataset_to_bytes(dataset))
        with session_scope() as session:
            row = session.get(DatasetSnapshot, snapshot.id)
            row.tensor_keys = {**(row.tensor_keys or {}), str(resolution): key}
    _datasets.clear()  # one dataset per worker process is enough; memory matters more
    _datasets[key] = dataset
    return dataset


def _initial_state(params: dict, class_names: list[str], store: ObjectStore, device: str):
    from workers.gan.config import preset_config
    from workers.gan.training import checkpoint_from_bytes, finetune_state, new_state

    if params.get("base_model"):
        with session_scope() as session:
            base = session.get(ModelVersion, params["base_model"])
            key = base.checkpoint_key
        return finetune_state(
            checkpoint_from_bytes(store.get(key)), class_names, seed=params["seed"], device=device
        )
    config = preset_config(
        params["preset"], params["resolution"], params["arch"], num_classes=len(class_names)
    )
    return new_state(config, class_names, seed=params["seed"], device=device)


def run_segment(lease: JobLease) -> None:
    import torch

    from workers.gan.training import (
        checkpoint_from_bytes,
        checkpoint_to_bytes,
        state_from_checkpoint,
        state_to_checkpoint,
        train,
    )

    started = time.monotonic()
    settings = get_settings()
    store = get_store()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with session_scope() as session:
        job = session.get(Job, lease.job_id)
        params, reported, delivery = dict(job.params), job.progress_done, job.deliveries
        segment = int((job.progress_info or {}).get("segment", 0)) + 1
        snapshot = session.get(DatasetSnapshot, params["snapshot_id"])
    total = params["steps"]
    dataset = load_dataset(store, snapshot, params["resolution"])
    class_names = list(dataset["class_names"])

    key = latest_checkpoint_key(store, lease.job_id)
    if key is None:
        state = _initial_state(params, class_names, store, device)
    else:
        state = state_from_checkpoint(checkpoint_from_bytes(store.get(key)), device=device)
    if delivery > 1 or reported > state.step:  # a worker died: say what it cost
        lease.event(
            "resumed",
            f"resumed at step {state.step}",
            {"step": state.step, "lost_steps": max(0, reported - state.step)},
        )
    first_step = state.step

    last_report = [0.0]

    def progress_fn(p: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last_report[0] < 1.0 and not p.get("final"):
            return
        last_report[0] = now
        info = {
            "segment": segment,
            "loss_d": round(p["loss_d"], 4),
            "loss_g": round(p["loss_g"], 4),
            "steps_per_s": round(p["steps_per_s"], 2),
            "images_per_s": round(p["images_per_s"], 1),
        }
        lease.progress(state.step, total, info)

    if state.step < total:
        train(
            state,
            dataset,
            steps=total - state.step,
            seconds=settings.train_segment_seconds,
            progress_fn=progress_fn,
            abort_fn=lambda: lease.should_stop,
        )
        step_key = f"{checkpoint_prefix(lease.job_id)}step-{state.step:09d}.pt"
        store.put(step_key, checkpoint_to_bytes(state_to_checkpoint(state)))
        for old in sorted(o["Key"] for o in store.list(checkpoint_prefix(lease.job_id)))[
            : -settings.keep_checkpoints
        ]:
            store.delete(old)
        lease.progress(state.step, total, {"segment": segment, "checkpoint": step_key})
    if lease.should_stop:
        raise Cancelled()
    # wall time of the whole segment (load, train, checkpoint): what the segment overhead is measured on
    wall = time.monotonic() - started
    timing = {
        "segment": segment,
        "step": state.step,
        "steps": state.step - first_step,
        "seconds": round(wall, 2),
        "steps_per_s": round((state.step - first_step) / wall, 3),
    }
    if state.step < total:
        with session_scope() as session:
            job = session.get(Job, lease.job_id)
            jobs.release_lease(session=session, job=job)
            jobs.add_event(
                session=session,
                job_id=job.id,
                kind="segment",
                message=f"segment {segment} ended at step {state.step} of {total}",
                data=timing,
            )
            name, queue = TRAIN_SEGMENT
            send_after_commit(session, name, kwargs={"job_id": job.id}, queue=queue)
        return
    lease.event("trained", f"segment {segment} reached step {state.step}; evaluating", timing)
    finish_training(lease, state, dataset, snapshot, params)


def finish_training(lease: JobLease, state, dataset: dict, snapshot: DatasetSnapshot, params: dict) -> None:  # noqa: ANN001
    from workers.evaluation import evaluate_version, judge_for
    from workers.gan.figures import loss_curve_png, sample_grid_png
    from workers.gan.training import checkpoint_to_bytes, state_to_checkpoint

    store = get_store()
    with session_scope() as session:
        existing = session.scalars(select(ModelVersion).where(ModelVersion.job_id == lease.job_id)).first()
        version_id = existing.id if existing else new_id()
    judge = judge_for(store, snapshot, dataset)
    metrics = evaluate_version(state.G_ema, judge, dataset)
    ckpt_key = registry.checkpoint_key(version_id)
    grid_key, curve_key = f"models/{version_id}/grid.png", f"models/{version_id}/losses.png"
    store.put(ckpt_key, checkpoint_to_bytes(state_to_checkpoint(state)))
    store.put(grid_key, sample_grid_png(state.G_ema, list(dataset["class_names"])), content_type="image/png")
    store.put(curve_key, loss_curve_png(state.history), content_type="image/png")
    with session_scope() as session:
        if existing is None:
            registry.create_version(
                session=session,
                id=version_id,
                arch=params["arch"],
                preset=params["preset"],
                resolution=params["resolution"],
                class_names=list(dataset["class_names"]),
                steps=state.step,
                checkpoint_key=ckpt_key,
                metrics=metrics,
                grid_key=grid_key,
                loss_curve_key=curve_key,
                dataset_snapshot_id=snapshot.id,
                parent_id=params.get("base_model"),
                job_id=lease.job_id,
            )
    from workers.evaluation import promotion_decision

    promoted, reason = promotion_decision(store, version_id, metrics, judge, dataset, params)
    if promoted:
        with session_scope() as session:
            registry.promote(session=session, version_id=version_id, reason=reason, job_id=lease.job_id)
    else:
        lease.event("not_promoted", f"model {version_id} not promoted: {reason}", {"reason": reason})
    result = {
        "model_version": version_id,
        "steps": state.step,
        "metrics": metrics,
        "checkpoint_key": ckpt_key,
        "grid_key": grid_key,
        "loss_curve_key": curve_key,
        "promoted": promoted,
        "promotion": reason,
        "dataset_snapshot": snapshot.id,
    }
    lease.succeed(result, message=f"model {version_id} trained for {state.step} steps")
