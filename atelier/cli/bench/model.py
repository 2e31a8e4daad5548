"""Bare model benchmarks: no API, queue, SQL or S3, just the model loop in this process.

    bench_train(presets)               steps/s and images/s of `train_step` per preset and arch
    bench_generate_bare(preset, count) generate + PNG-encode in memory: the ceiling that the whole
                                       system's bulk generation is compared against

`atelier bench train --json` prints one JSON object; `atelier bench generate` (bench/system.py) measures
bare_memory with bench_generate_bare. Models are
randomly initialised (throughput does not depend on the weights) unless a checkpoint is given.
"""

from __future__ import annotations

import json
import os
import time

import click


def _device(device: str | None):
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_train(
    presets=("tiny", "small", "base"),
    *,
    archs=("atelier", "dcgan"),
    seconds: float = 8.0,
    device: str | None = None,
    min_steps: int = 3,
    precision: str | None = None,
) -> dict:
    """Time the bare training step on synthetic data (the loop cost is independent of the pixels);
    ``precision`` None: training's default on ``device``."""
    import torch

    from atelier.gan.config import preset_config
    from atelier.gan.training import new_state, train_step

    dev = _device(device)
    results = {}
    for preset in presets:
        for arch in archs:
            cfg = preset_config(preset, arch=arch, num_classes=10)
            state = new_state(cfg, [f"c{i}" for i in range(10)], seed=0, device=dev, precision=precision)
            n = 4 * cfg.batch_size
            gen = torch.Generator().manual_seed(0)
            images = torch.randint(
                0, 256, (n, 3, cfg.resolution, cfg.resolution), dtype=torch.uint8, generator=gen
            )
            images, labels = images.to(dev), (torch.arange(n) % 10).to(dev)
            train_step(state, images, labels)  # warm-up: allocator, kernels
            _sync(dev)
            steps, t0 = 0, time.perf_counter()
            while steps < min_steps or time.perf_counter() - t0 < seconds:
                train_step(state, images, labels)
                steps += 1
            _sync(dev)
            dt = time.perf_counter() - t0
            results[f"{preset}/{arch}"] = {
                "resolution": cfg.resolution,
                "batch_size": cfg.batch_size,
                "precision": state.precision,  # bf16 by default on CUDA and on a CPU with bf16 units
                "steps": steps,
                "steps_per_s": round(steps / dt, 3),
                "images_per_s": round(steps * cfg.batch_size / dt, 1),
            }
    return {
        "benchmark": "train_bare",
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "results": results,
    }


def bench_generate_bare(
    preset: str = "tiny",
    count: int = 2000,
    *,
    batch_size: int = 256,
    checkpoint: str | None = None,
    device: str | None = None,
    workers: int | None = None,
    compress_level: int = 6,
) -> dict:
    """Generate ``count`` images and PNG-encode them in memory, encoding on a thread pool meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from atelier.gan.config import preset_config
    from atelier.gan.networks import build_generator
    from atelier.gan.sampling import encode_png, generate, load_generator
    from atelier.gan.training import checkpoint_from_bytes
    from atelier.generation.batches import run_batches

    dev = _device(device)
    if checkpoint:
        with open(checkpoint, "rb") as f:
            G, cfg, _ = load_generator(checkpoint_from_bytes(f.read()), dev)
    else:
        cfg = preset_config(preset, num_classes=10)
        torch.manual_seed(0)
        G = build_generator(cfg).eval().requires_grad_(False).to(dev)
    labels = [i % cfg.num_classes for i in range(count)]
    workers = workers or os.cpu_count() or 1
    generate(G, seeds=list(range(min(count, 8))), labels=labels[:8], device=dev)  # warm-up

    t0 = time.perf_counter()
    for s in range(0, count, batch_size):
        generate(G, seeds=list(range(s, min(count, s + batch_size))), labels=labels[s : s + batch_size])
    gen_s = time.perf_counter() - t0

    sizes: list[int] = []
    t0 = time.perf_counter()
    # the worker's own loop (generation.batches): zlib releases the GIL, so encoding runs on every core
    # while the next batch generates
    with ThreadPoolExecutor(workers) as pool:
        run_batches(
            range(count),
            produce=lambda idx: generate(G, seeds=idx, labels=[labels[i] for i in idx]),
            encode=lambda img, _i: len(encode_png(img, compress_level)),
            consume=sizes.extend,
            batch=batch_size,
            pool=pool,
        )
    total_bytes = sum(sizes)
    both_s = time.perf_counter() - t0
    return {
        "benchmark": "generate_bare_memory",
        "preset": cfg.preset,
        "arch": cfg.arch,
        "resolution": cfg.resolution,
        "device": str(dev),
        "count": count,
        "batch_size": batch_size,
        "encode_workers": workers,
        "png_compress_level": compress_level,
        "generate_only_images_per_s": round(count / gen_s, 1),
        "images_per_s": round(count / both_s, 1),
        "mean_png_bytes": round(total_bytes / max(1, count)),
    }


@click.command("train")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (the only output format)")
@click.option("--preset", "presets", multiple=True, type=click.Choice(["tiny", "small", "base"]))
@click.option("--arch", "archs", multiple=True, type=click.Choice(["atelier", "dcgan"]))
@click.option("--seconds", type=float, default=None, help="per preset and arch [8; 20 with --nproc]")
@click.option("--device", default=None)
@click.option(
    "--precision",
    type=click.Choice(["bf16", "fp32"]),
    default=None,
    help="default: training's (bf16 on CUDA and on a CPU with AMX or AVX512-BF16, else fp32); "
    "one process only",
)
@click.option(
    "--nproc",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="N > 1: one rank against N torch.distributed ranks at the same global batch (cli/bench/dist.py)",
)
@click.option(
    "--repeats",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="with --nproc: runs of each, best kept",
)
def bench_train_cmd(as_json, presets, archs, seconds, device, precision, nproc, repeats):
    """Bare training loop: steps/s and images/s per preset; with --nproc N, 1 rank against N ranks."""
    if nproc > 1 and precision:
        raise click.BadParameter(
            "--precision is measured in one process; drop it or --nproc", param_hint="--precision"
        )
    if nproc > 1:
        from atelier.cli.bench.dist import bench_train_distributed

        if len(presets) > 1 or len(archs) > 1:
            raise click.BadParameter("with --nproc, one --preset and one --arch", param_hint="--preset")
        out = bench_train_distributed(
            nproc,
            preset=presets[0] if presets else "tiny",
            arch=archs[0] if archs else "atelier",
            seconds=seconds or 20.0,
            device=device,
            repeats=repeats,
        )
        click.echo(json.dumps(out))
        return
    out = bench_train(
        presets or ("tiny", "small", "base"),
        archs=archs or ("atelier", "dcgan"),
        seconds=seconds or 8.0,
        device=device,
        precision=precision,
    )
    click.echo(json.dumps(out))
