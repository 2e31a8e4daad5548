"""`atelier bench generate --json`: bulk generation through the whole system against bare loops, in one run.

    bare_memory  generate + encode in memory, one process (the worker's own encoder and thread pool)
    bare_s3      the same plus a put of every file to the same S3, from the same thread pool
    system       API -> Redis -> Celery worker -> encode -> S3 -> SQL, on an embedded stack in a temp dir;
                 images/s from the job's started_at to its finished_at (manifest included)
    ratio        system / bare_s3: what the API, queue, SQL and chunking cost

The model is freshly initialised (untrained): throughput does not depend on the weights. All three use
the same checkpoint, format (PNG level 1, the default) and encoder, on the same machine, in one run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import click


def _model(preset: str, resolution: int, classes: int):  # noqa: ANN202
    import torch

    from atelier.gan.config import preset_config
    from atelier.gan.training import checkpoint_to_bytes, new_state, state_to_checkpoint

    cfg = preset_config(preset, resolution=resolution, num_classes=classes)
    torch.manual_seed(0)
    state = new_state(cfg, [f"class{i}" for i in range(classes)], seed=0)
    return checkpoint_to_bytes(state_to_checkpoint(state)), cfg


def _bare(ckpt: bytes, count: int, *, batch: int, store=None, prefix: str = "") -> dict:  # noqa: ANN001
    """The worker's own loop (atelier.generation.batches.run_batches) without the system: generate a batch,
    encode (and put) it on the worker's thread pool while the next batch generates."""
    import hashlib

    from atelier.gan.sampling import generate, load_generator, to_hwc
    from atelier.gan.training import checkpoint_from_bytes
    from atelier.generation import postprocess as imaging
    from atelier.generation.batches import encode_pool, run_batches
    from atelier.generation.tasks import device

    G, cfg, names = load_generator(checkpoint_from_bytes(ckpt), device())
    labels = [i % len(names) for i in range(count)]
    sizes: list[int] = []

    def produce(idx: list[int]):  # noqa: ANN202
        return to_hwc(generate(G, seeds=idx, labels=[labels[i] for i in idx], batch_size=len(idx)))

    def encode(arr, i: int) -> int:  # noqa: ANN001
        prov = {"generator": "atelier", "seed": i, "index": i, "job_id": "bench", "model_version": "bench",
                "category": names[labels[i]]}  # fmt: skip
        data, _, _ = imaging.render(arr, ops=[], size=cfg.resolution, fmt="png", provenance=prov)
        hashlib.sha256(data).hexdigest()
        if store is not None:
            store.put(f"{prefix}{i:06d}.png", data, content_type="image/png", metadata={"seed": str(i)})
        return len(data)

    generate(G, seeds=[0], labels=[0])  # warm-up
    t0 = time.perf_counter()
    run_batches(range(count), produce=produce, encode=encode, consume=sizes.extend, batch=batch)
    dt = time.perf_counter() - t0
    return {"images": count, "seconds": round(dt, 2), "images_per_s": round(count / dt, 1),
            "mean_bytes": round(sum(sizes) / count), "threads": encode_pool()._max_workers}  # fmt: skip


def bench_generate_system(preset: str = "tiny", resolution: int = 64, count: int = 10_000) -> dict:
    from atelier.cli.stack import Stack
    from atelier.client import Client

    ckpt, cfg = _model(preset, resolution, classes=4)
    batch = 256 if _device_is_cuda() else 64
    out: dict = {
        "benchmark": "generate_system",
        "preset": preset,
        "resolution": resolution,
        "count": count,
        "format": "png (level 1)",
        "model": "freshly initialised, untrained (throughput does not depend on the weights)",
        "cpu_count": os.cpu_count(),
        "batch_size": batch,
    }
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp, Stack(Path(tmp)) as stack:
        os.environ.update(stack.env)
        _reset_caches()
        from atelier.core.storage import get_store
        from atelier.training import registry

        store = get_store()
        out["bare_memory"] = _bare(ckpt, count, batch=batch)
        out["bare_s3"] = _bare(ckpt, count, batch=batch, store=store, prefix="bench/bare/")
        version_id = registry.register_checkpoint(
            store, ckpt, arch=cfg.arch, preset=preset, resolution=resolution,
            class_names=[f"class{i}" for i in range(4)],
        )  # fmt: skip
        client = Client(stack.api_url, stack.admin_key)
        job = client.post("/v1/generation-jobs", json={"model": version_id, "count": count, "seed": 0})
        job = client.wait(job["id"], timeout=3600, interval=0.5)
        client.close()
        dt = (job.finished_at - job.started_at).total_seconds()  # the SDK's Job: aware datetimes
        out["system"] = {"status": job["status"], "images": job["progress"]["done"], "seconds": round(dt, 2),
                         "images_per_s": round(job["progress"]["done"] / dt, 1),
                         "chunks": job["result"].get("chunks") if job["result"] else None}  # fmt: skip
    out["ratio"] = round(out["system"]["images_per_s"] / out["bare_s3"]["images_per_s"], 3)
    out["storage_cost"] = round(out["bare_s3"]["images_per_s"] / out["bare_memory"]["images_per_s"], 3)
    return out


def _device_is_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _reset_caches() -> None:
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine
    from atelier.core.queue import celery_client

    get_settings.cache_clear()
    celery_client.cache_clear()
    dispose_engine()


@click.command("generate")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (the only output format)")
@click.option("--preset", default="tiny", show_default=True, type=click.Choice(["tiny", "small", "base"]))
@click.option("--resolution", type=int, default=64, show_default=True)
@click.option("--count", type=int, default=10_000, show_default=True)
def bench_generate_system_cmd(as_json: bool, preset: str, resolution: int, count: int) -> None:
    """Bulk generation: bare loop in memory, bare loop + S3, and the whole system; prints one JSON."""
    click.echo(json.dumps(bench_generate_system(preset, resolution, count)))
