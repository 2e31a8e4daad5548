"""`atelier bench gpu`: the GPU check, one JSON object.

Given a CUDA device: train `small` at 64 px for a fixed number of minutes (bf16, channels_last), sample,
score with a judge trained on the same photos, then run the bare train and generate benches. On a
machine without a GPU, `--device cpu --minutes 0.2` runs the same code end to end as a smoke test.

    atelier bench gpu --data ../shared/datasets/clothing-small/train --minutes 10
"""

from __future__ import annotations

import json
import time

import click


def bench_gpu(
    data: str,
    *,
    device: str | None = None,
    minutes: float = 10.0,
    preset: str = "small",
    resolution: int | None = None,
    precision: str | None = None,
    judge_epochs: int = 25,
    judge_seconds: float = 120.0,
    per_category: int = 100,
    bench_seconds: float = 8.0,
    bench_count: int = 2000,
    seed: int = 0,
) -> dict:
    import torch

    from atelier.cli.bench.model import bench_generate_bare, bench_train
    from atelier.gan.config import preset_config
    from atelier.gan.data import prepare_folder
    from atelier.gan.judge import train_judge
    from atelier.gan.metrics import evaluate
    from atelier.gan.sampling import generate, load_generator
    from atelier.gan.training import new_state, state_to_checkpoint, train

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = preset_config(preset, resolution)
    t0 = time.perf_counter()
    dataset = prepare_folder(data, cfg.resolution)
    names = dataset["class_names"]
    prepare_s = time.perf_counter() - t0

    state = new_state(cfg, names, seed=seed, device=dev, precision=precision)
    progress: dict = {}
    train(state, dataset, seconds=minutes * 60, progress_fn=progress.update, progress_every=50)
    ckpt = state_to_checkpoint(state)
    G, _, _ = load_generator(ckpt, dev, state.precision)

    t0 = time.perf_counter()
    n = per_category * len(names)
    generate(G, seeds=list(range(n)), labels=[i % len(names) for i in range(n)])
    sample_s = time.perf_counter() - t0

    # the same ruler as `atelier gan train` (25 cosine epochs); the seconds only cap it
    judge, info = train_judge(dataset, seed=0, epochs=judge_epochs, seconds=judge_seconds)
    metrics = evaluate(G, judge, dataset, n_per_class=per_category, kid_subsets=20)
    keep = ("gan_test_accuracy", "gan_test_per_class", "kid", "kid_std", "precision", "recall", "truncation")
    return {
        "benchmark": "gpu_check",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "preset": preset,
        "resolution": cfg.resolution,
        "batch_size": cfg.batch_size,
        "precision": state.precision,
        "channels_last": state.channels_last,
        "images": int(dataset["images"].shape[0]),
        "prepare_s": round(prepare_s, 1),
        "train": {
            "minutes": minutes,
            "steps": state.step,
            "steps_per_s": round(progress.get("steps_per_s", 0.0), 3),
            "images_per_s": round(progress.get("images_per_s", 0.0), 1),
            "loss_d": progress.get("loss_d"),
            "loss_g": progress.get("loss_g"),
            "augment_p": progress.get("augment_p"),
        },
        "sample": {"images": n, "images_per_s": round(n / max(sample_s, 1e-9), 1)},
        "judge_heldout_accuracy": info["heldout_accuracy"],
        "judge_epochs": info["epochs"],
        "metrics": {k: metrics[k] for k in keep},
        "bench_train": bench_train((preset,), archs=("atelier",), seconds=bench_seconds, device=str(dev)),
        "bench_generate": bench_generate_bare(preset, bench_count, device=str(dev)),
    }


@click.command("gpu")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (the only output format)")
@click.option(
    "--data",
    default="../shared/datasets/clothing-small/train",
    show_default=True,
    type=click.Path(exists=True, file_okay=False),
    help="one folder per category",
)
@click.option("--device", default=None, help="default: cuda when available")
@click.option("--minutes", type=float, default=10.0, show_default=True, help="training budget")
@click.option("--preset", default="small", show_default=True, type=click.Choice(["tiny", "small", "base"]))
@click.option("--resolution", type=int, default=None, help="default: the preset's")
@click.option("--precision", type=click.Choice(["bf16", "fp32"]), default=None)
@click.option("--judge-epochs", type=click.IntRange(1), default=25, show_default=True)
@click.option("--judge-seconds", type=float, default=120.0, show_default=True, help="cap on the judge's time")
@click.option("--per-category", type=int, default=100, show_default=True)
@click.option("--bench-seconds", type=float, default=8.0, show_default=True)
@click.option("--bench-count", type=int, default=2000, show_default=True)
def bench_gpu_cmd(
    as_json,
    data,
    device,
    minutes,
    preset,
    resolution,
    precision,
    judge_epochs,
    judge_seconds,
    per_category,
    bench_seconds,
    bench_count,
):
    """The GPU check: train, sample, judge, both benches; `--device cpu --minutes 0.2` is a smoke run."""
    out = bench_gpu(
        data,
        device=device,
        minutes=minutes,
        preset=preset,
        resolution=resolution,
        precision=precision,
        judge_epochs=judge_epochs,
        judge_seconds=judge_seconds,
        per_category=per_category,
        bench_seconds=bench_seconds,
        bench_count=bench_count,
    )
    click.echo(json.dumps(out))
