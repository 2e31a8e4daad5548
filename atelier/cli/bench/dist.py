"""`atelier bench train --nproc N --json`: one rank against N torch.distributed ranks, same global batch.

    one_rank   train() in this process, every core as torch threads (what a training segment runs today)
    n_ranks    run_distributed_segment(nproc=N): N rank processes (gloo on the CPU, NCCL on CUDA), each on
               batch B/N; steps/s measured inside rank 0, so process start-up is reported apart (wall_s)
    ratio      n_ranks / one_rank steps/s (images/s: the same ratio, the global batch being equal)
    repeats    the pair is run R times, alternating; each figure is the best of its R runs (the run least
               disturbed by other work on a shared machine), and every run's figure is listed
    follow     the same K steps from the same weights on 1 and on N ranks: how far the N-rank run is
               from the 1-rank run (largest loss difference, relative L2 distance of G's and D's weights)

Rates skip the first report (``WARMUP_STEPS``): allocator and kernel warm-up, DDP's first buckets.
"""

from __future__ import annotations

import os
import time

WARMUP_STEPS = 5


def _rate(reports: list[dict]) -> dict:
    """steps/s between the first report after warm-up and the last one."""
    first = next((r for r in reports if r["done"] >= WARMUP_STEPS), None)
    last = reports[-1] if reports else None
    if first is None or last is None or last["done"] <= first["done"]:
        raise RuntimeError("too few steps to time: raise --seconds")
    steps = last["done"] - first["done"]
    return {"steps": steps, "steps_per_s": steps / (last["elapsed_s"] - first["elapsed_s"])}


def _synthetic(cfg, n: int) -> dict:  # noqa: ANN001 - GanConfig
    import torch

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, cfg.resolution, cfg.resolution), dtype=torch.uint8, generator=gen)
    return {
        "images": images,
        "labels": torch.arange(n) % cfg.num_classes,
        "class_names": [f"c{i}" for i in range(cfg.num_classes)],
    }


def _distance(a, b) -> float:  # noqa: ANN001 - nn.Module
    pa = {k: v.detach() for k, v in a.named_parameters()}
    pb = {k: v.detach() for k, v in b.named_parameters()}
    num = sum(float((pa[k] - pb[k]).double().norm() ** 2) for k in pa)
    den = sum(float(pa[k].double().norm() ** 2) for k in pa)
    return (num / max(den, 1e-30)) ** 0.5


def follow(cfg, dataset: dict, nproc: int, steps: int, device) -> dict:  # noqa: ANN001
    """``steps`` steps from the same state on 1 rank and on ``nproc`` ranks; how far apart they end."""
    from atelier.gan.launch import run_distributed_segment
    from atelier.gan.training import (
        checkpoint_from_bytes,
        checkpoint_to_bytes,
        new_state,
        state_from_checkpoint,
        state_to_checkpoint,
        train,
    )

    start = checkpoint_to_bytes(state_to_checkpoint(new_state(cfg, dataset["class_names"], device=device)))
    one, many = (state_from_checkpoint(checkpoint_from_bytes(start), device=device) for _ in range(2))
    r1: list[dict] = []
    rn: list[dict] = []
    train(one, dataset, steps=steps, progress_fn=r1.append, progress_every=1)
    run_distributed_segment(many, dataset, nproc=nproc, steps=steps, progress_fn=rn.append, progress_every=1)
    pairs = [(a, b) for a, b in zip(r1, rn, strict=False) if not a["final"] and not b["final"]]
    return {
        "steps": steps,
        "max_abs_loss_d_diff": round(max(abs(a["loss_d"] - b["loss_d"]) for a, b in pairs), 6),
        "max_abs_loss_g_diff": round(max(abs(a["loss_g"] - b["loss_g"]) for a, b in pairs), 6),
        "G_relative_l2": float(f"{_distance(one.G, many.G):.3g}"),
        "D_relative_l2": float(f"{_distance(one.D, many.D):.3g}"),
        "G_ema_relative_l2": float(f"{_distance(one.G_ema, many.G_ema):.3g}"),
    }


def bench_train_distributed(
    nproc: int,
    *,
    preset: str = "tiny",
    arch: str = "atelier",
    seconds: float = 20.0,
    device: str | None = None,
    follow_steps: int = 10,
    repeats: int = 3,
) -> dict:
    import torch

    from atelier.gan.config import preset_config
    from atelier.gan.launch import default_threads, run_distributed_segment
    from atelier.gan.training import new_state, train

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = preset_config(preset, arch=arch, num_classes=10)
    dataset = _synthetic(cfg, 4 * cfg.batch_size)
    names = dataset["class_names"]

    ones, manys, walls = [], [], []
    for _ in range(repeats):
        reports: list[dict] = []
        state = new_state(cfg, names, device=dev)
        train(state, dataset, seconds=seconds, progress_fn=reports.append, progress_every=5)
        ones.append(_rate(reports))

        reports = []
        t0 = time.perf_counter()
        run_distributed_segment(
            new_state(cfg, names, device=dev),
            dataset,
            nproc=nproc,
            seconds=seconds,
            progress_fn=reports.append,
            progress_every=5,
            device=str(dev),
        )
        walls.append(time.perf_counter() - t0)
        manys.append(_rate(reports))
    one = max(ones, key=lambda r: r["steps_per_s"])
    many = max(manys, key=lambda r: r["steps_per_s"])

    G_D = new_state(cfg, names)
    grad_mb = sum(p.numel() for net in (G_D.G, G_D.D) for p in net.parameters()) * 4 / 1e6
    b = cfg.batch_size
    cores = os.cpu_count() or 1
    threads = default_threads(nproc)
    out = {
        "benchmark": "train_distributed",
        "device": str(dev),
        "backend": "nccl" if dev.type == "cuda" else "gloo",
        "preset": preset,
        "arch": arch,
        "resolution": cfg.resolution,
        "global_batch": b,
        "cpu_cores": cores,
        "one_rank": {
            "threads": torch.get_num_threads(),
            "batch": b,
            "steps": one["steps"],
            "steps_per_s": round(one["steps_per_s"], 3),
            "images_per_s": round(one["steps_per_s"] * b, 1),
            "steps_per_s_each_run": [round(r["steps_per_s"], 3) for r in ones],
        },
        "n_ranks": {
            "nproc": nproc,
            "threads_per_rank": threads if dev.type == "cpu" else None,
            "batch_per_rank": b // nproc,
            "steps": many["steps"],
            "steps_per_s": round(many["steps_per_s"], 3),
            "images_per_s": round(many["steps_per_s"] * b, 1),
            "steps_per_s_each_run": [round(r["steps_per_s"], 3) for r in manys],
            "wall_s_with_startup": round(min(walls), 1),
        },
        "ratio": round(many["steps_per_s"] / one["steps_per_s"], 3),
        "repeats": repeats,
        "seconds_per_run": seconds,
        "allreduce_mb_per_step": round(grad_mb, 2),
    }
    if dev.type == "cpu":
        out["limit"] = (
            f"{cores} CPU cores shared by both runs: 1 rank is one process with "
            f"{torch.get_num_threads()} torch threads on batch {b}; {nproc} ranks are {nproc} processes with "
            f"{threads} thread(s) each on batch {b // nproc}, plus an all-reduce of {grad_mb:.1f} MB of "
            "gradients per step over loopback TCP (gloo) on the same cores. No rank has a core or a device "
            "of its own, so the ratio compares two ways of using the same cores (threads inside one "
            "process against processes) less the all-reduce; it is not a measure of scaling across devices"
        )
    if follow_steps:
        out["follow"] = follow(cfg, dataset, nproc, follow_steps, dev)
    return out
