"""`atelier.train_segment`: one bounded segment of a training job on the `train` queue.

    lease the segment's unit ─ load dataset tensor (S3, built once per snapshot and resolution)
              ─ load the newest checkpoint of this job from S3 (or start / fine-tune)
              ─ train for at most ATELIER_TRAIN_SEGMENT_SECONDS, progress at most once a second
              ─ write checkpoint, keep the newest few
              ─ steps left? end the unit and add the next segment's, in one transaction
                          : evaluate, register, gate, end the job

A worker killed mid-segment loses only that segment: the reconciler re-queues its unit and it resumes
from the last checkpoint, bit for bit (the checkpoint carries every RNG state). A checkpoint that
cannot be written (S3 down) is retried, then the segment is given back: earlier checkpoints stand.

A job with ``devices`` N > 1 trains each segment as N torch.distributed ranks on this worker's host
(atelier.gan.launch.run_distributed_segment): one GPU each with NCCL when the worker sees CUDA (fewer
than N GPUs fails the job: no silent fall-back to a slower device), gloo processes on the CPU otherwise.
Rank 0 writes the one checkpoint, which this task puts in S3 as above. A rank that dies (killed, out of
memory, a lost peer) stops the others and raises DistributedTrainingError: the segment is given back and
retried from the last checkpoint in S3, up to ATELIER_MAX_DELIVERIES tries (the bound on a worker that
dies), then the job fails with the rank's error.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from atelier.core import jobs, units
from atelier.core.config import get_settings
from atelier.core.db import session_scope
from atelier.core.models import DatasetSnapshot, Job, ModelVersion
from atelier.core.models.base import new_id
from atelier.core.params import TrainParams
from atelier.core.queue import TRAIN_SEGMENT
from atelier.core.storage import ObjectStore, get_store
from atelier.training import registry, snapshots
from atelier.workers.celery_app import task
from atelier.workers.device import worker_device
from atelier.workers.leases import Cancelled, Lease, lease_unit

log = logging.getLogger(__name__)
_datasets: dict[str, dict] = {}  # S3 key -> dataset; immutable objects, so a cache is safe


@task(TRAIN_SEGMENT)
def train_segment(unit_id: int) -> None:
    with lease_unit(unit_id) as lease:
        if lease is not None:
            run_segment(lease)


def checkpoint_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def latest_checkpoint_key(store: ObjectStore, job_id: str) -> str | None:
    keys = sorted(o["Key"] for o in store.list(checkpoint_prefix(job_id)))
    return keys[-1] if keys else None


def load_dataset(store: ObjectStore, snapshot: DatasetSnapshot, resolution: int) -> dict:
    from atelier.gan.data import dataset_from_bytes, dataset_to_bytes, prepare_images

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


def _initial_state(params: TrainParams, class_names: list[str], store: ObjectStore, device: str):
    from atelier.gan.config import preset_config
    from atelier.gan.training import checkpoint_from_bytes, finetune_state, new_state

    if params.base_model:
        with session_scope(readonly=True) as session:
            key = session.get(ModelVersion, params.base_model).checkpoint_key
        return finetune_state(
            checkpoint_from_bytes(store.get(key)), class_names, seed=params.seed, device=device
        )
    config = preset_config(params.preset, params.resolution, params.arch, num_classes=len(class_names))
    return new_state(config, class_names, seed=params.seed, device=device)


class TrainingDevicesUnavailable(RuntimeError):
    """The job asks for more GPUs than this CUDA worker has: retrying here cannot help."""


def segment_device(devices: int) -> str:
    """Where this worker runs a segment of `devices` ranks: "cuda" or "cpu"."""
    import torch

    # worker_device logs once why a CUDA build runs on the CPU, and exports the device as a metric
    if worker_device() == "cpu":
        return "cpu"
    if devices > torch.cuda.device_count():
        raise TrainingDevicesUnavailable(
            f"devices {devices} needs {devices} GPUs on one worker host; "
            f"this worker sees {torch.cuda.device_count()} (CUDA_VISIBLE_DEVICES)"
        )
    return "cuda"


def retry_lost_rank(lease: Lease, exc: Exception, settings) -> bool:  # noqa: ANN001 - Settings
    """A rank died mid-segment: give the segment back to be retried from the last checkpoint, as a dead
    worker's is, while ATELIER_MAX_DELIVERIES allows. False when the tries are spent (the caller fails)."""
    if lease.unit.attempts + 1 >= settings.max_deliveries:
        return False
    reason = str(exc).splitlines()[0][:300]
    lease.give_back(f"a training rank failed: {reason}")
    lease.event(
        "segment_retried",
        f"segment {lease.unit.seq + 1} will be retried from the last checkpoint: {reason}",
        {"unit": lease.unit.id, "attempt": lease.unit.attempts + 1, "error": str(exc)[-2000:]},
    )
    return True


def run_segment(lease: Lease) -> None:
    from atelier.gan.rank_group import DistributedTrainingError
    from atelier.gan.training import (
        checkpoint_from_bytes,
        checkpoint_to_bytes,
        state_from_checkpoint,
        state_to_checkpoint,
    )

    started = time.monotonic()
    settings = get_settings()
    store = get_store()
    params = TrainParams.model_validate(lease.params)
    device = segment_device(params.devices)
    segment, delivery = lease.unit.seq + 1, lease.unit.deliveries

    def read(session):  # noqa: ANN001, ANN202
        snapshot = session.get(DatasetSnapshot, params.snapshot_id)
        session.expunge(snapshot)
        return session.get(Job, lease.job_id).progress_done, snapshot

    reported, snapshot = lease.sql(read, what="reading the job")
    total = params.steps
    dataset = lease.retrying(lambda: load_dataset(store, snapshot, params.resolution), what="dataset")
    class_names = list(dataset["class_names"])

    key = lease.retrying(lambda: latest_checkpoint_key(store, lease.job_id), what="checkpoint list")
    if key is None:
        state = lease.retrying(
            lambda: _initial_state(params, class_names, store, device), what="initial state"
        )
    else:
        blob = lease.retrying(lambda: store.get(key), what="checkpoint read")
        state = state_from_checkpoint(checkpoint_from_bytes(blob), device=device)
    # a worker died, or the segment was given back (a lost rank, an outage): say what it cost
    if delivery > 1 or lease.unit.attempts or reported > state.step:
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
        lease.progress(p["step"], total, info)

    if state.step < total:
        try:
            _train(state, dataset, params, device, settings, total - state.step, progress_fn, lease)
        except DistributedTrainingError as exc:
            if retry_lost_rank(lease, exc, settings):
                return
            raise
        step_key = f"{checkpoint_prefix(lease.job_id)}step-{state.step:09d}.pt"
        blob = checkpoint_to_bytes(state_to_checkpoint(state))
        lease.retrying(lambda: store.put(step_key, blob), what="checkpoint write")
        lease.retrying(
            lambda: _prune_checkpoints(store, lease.job_id, settings.keep_checkpoints), what="prune"
        )
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

        def next_segment(session, job: Job) -> None:  # noqa: ANN001
            jobs.add_event(
                session=session,
                job_id=job.id,
                kind="segment",
                message=f"segment {segment} ended at step {state.step} of {total}",
                data=timing,
            )
            units.add_unit(session=session, job=job, kind="train", seq=lease.unit.seq + 1)

        lease.succeed(then=next_segment)
        return
    lease.event("trained", f"segment {segment} reached step {state.step}; evaluating", timing)
    finish_training(lease, state, dataset, snapshot, params)


def _train(state, dataset, params, device, settings, steps, progress_fn, lease) -> None:  # noqa: ANN001
    from atelier.gan.training import train

    if params.devices == 1:
        train(
            state,
            dataset,
            steps=steps,
            seconds=settings.train_segment_seconds,
            progress_fn=progress_fn,
            abort_fn=lambda: lease.should_stop,
        )
        return
    from atelier.gan.launch import run_distributed_segment

    # The ranks' logs and inputs live in a folder of this segment's; its error carries the logs' tail.
    with tempfile.TemporaryDirectory(prefix=f"atelier-train-{lease.job_id}-") as work:
        run_distributed_segment(
            state,
            dataset,
            nproc=params.devices,
            steps=steps,
            seconds=settings.train_segment_seconds,
            progress_fn=progress_fn,
            abort_fn=lambda: lease.should_stop,
            device=device,
            workdir=work,
            seed=params.seed,
        )


def _prune_checkpoints(store: ObjectStore, job_id: str, keep: int) -> None:
    for old in sorted(o["Key"] for o in store.list(checkpoint_prefix(job_id)))[:-keep]:
        store.delete(old)


def finish_training(
    lease: Lease, state, dataset: dict, snapshot: DatasetSnapshot, params: TrainParams
) -> None:  # noqa: ANN001
    from atelier.gan.figures import loss_curve_png, sample_grid_png
    from atelier.gan.metrics import SWEPT_CHECKPOINT_FIELDS, chosen_truncation
    from atelier.gan.training import checkpoint_to_bytes, state_to_checkpoint
    from atelier.training.evaluation import evaluate_version, judge_for

    store = get_store()

    def existing_version(session):  # noqa: ANN001, ANN202
        return session.scalars(select(ModelVersion.id).where(ModelVersion.job_id == lease.job_id)).first()

    existing = lease.sql(existing_version, what="reading the registry")
    version_id = existing or new_id()
    judge = lease.retrying(lambda: judge_for(store, snapshot, dataset), what="judge")
    # The sweep chooses the version's default truncation, kept in its checkpoint: generation jobs that
    # ask for none, the grid and the gallery use it.
    metrics = evaluate_version(state.G_ema, judge, dataset, sweep=True)
    truncation = chosen_truncation(metrics)
    ckpt = state_to_checkpoint(state)
    if "truncation_sweep" in metrics:
        ckpt.update({k: metrics.get(k) for k in SWEPT_CHECKPOINT_FIELDS})
    ckpt_key = registry.checkpoint_key(version_id)
    grid_key, curve_key = f"models/{version_id}/grid.png", f"models/{version_id}/losses.png"
    blobs = [
        (ckpt_key, checkpoint_to_bytes(ckpt), "application/octet-stream"),
        (
            grid_key,
            sample_grid_png(state.G_ema, list(dataset["class_names"]), truncation=truncation),
            "image/png",
        ),
        (curve_key, loss_curve_png(state.history), "image/png"),
    ]
    for key, blob, content_type in blobs:
        lease.retrying(
            lambda k=key, b=blob, c=content_type: store.put(k, b, content_type=c), what=f"put {key}"
        )
    if existing is None:
        lease.sql(
            lambda session: registry.create_version(
                session=session,
                id=version_id,
                arch=params.arch,
                preset=params.preset,
                resolution=params.resolution,
                class_names=list(dataset["class_names"]),
                steps=state.step,
                checkpoint_key=ckpt_key,
                metrics=metrics,
                grid_key=grid_key,
                loss_curve_key=curve_key,
                dataset_snapshot_id=snapshot.id,
                parent_id=params.base_model,
                job_id=lease.job_id,
            ),
            what="registering the model",
        )
    from atelier.training.evaluation import promotion_decision

    promoted, reason = lease.retrying(
        lambda: promotion_decision(store, version_id, metrics, judge, dataset, params.model_dump()),
        what="promotion gate",
    )
    if promoted:
        lease.sql(
            lambda session: registry.promote(
                session=session, version_id=version_id, reason=reason, job_id=lease.job_id
            ),
            what="promoting",
        )
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
    lease.succeed(
        then=lambda session, job: units.end_job(
            session=session,
            job=job,
            to=jobs.SUCCEEDED,
            result=result,
            message=f"model {version_id} trained for {state.step} steps",
        )
    )
