"""`atelier gan ...`: train, sample and evaluate on a local folder, without the stack.

    atelier gan train  --data DIR --preset tiny --minutes 10 --out OUT  -> checkpoint.pt, grid.png, losses.png
                                     (then a truncation sweep with OUT/judge.pt chooses the default)
    atelier gan sample --checkpoint F --per-category 70 --out OUT        -> OUT/<category>/<index>.png
    atelier gan eval   --checkpoint F --data DIR [--sweep]               -> JSON metrics on stdout
                                     (--sweep: choose the default truncation, store it in F)

--nproc N trains as N torch.distributed ranks (subprocesses; gloo on the CPU, NCCL on CUDA) with the same
global batch; --nnodes/--node-rank/--master-addr/--master-port span several hosts (atelier/gan/launch.py
says what each host runs). --nproc 1 (the default) is the single-process loop.

--precision bf16 runs the GPU numerics (bf16 autocast; channels_last is the default everywhere) on any
device: training takes it by default on a CPU with AMX or AVX512-BF16 (1.4-1.6x the steps/s of fp32
there); on any other CPU it is how a CUDA worker's code path is tried without a GPU.

torch is imported inside the commands so that `atelier` itself starts on machines without it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _load_dataset(data: str, resolution: int, cache: str | None):
    from atelier.gan.data import dataset_from_bytes, dataset_to_bytes, prepare_folder

    cache_file = Path(cache) / f"{Path(data).resolve().name}-{resolution}.pt" if cache else None
    if cache_file and cache_file.exists():
        return dataset_from_bytes(cache_file.read_bytes())
    d = prepare_folder(data, resolution)
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(dataset_to_bytes(d))
    return d


def _judge(judge_path: str | Path | None, dataset: dict, epochs: int, seconds: float | None):  # noqa: ANN202
    """The judge in ``judge_path`` if it exists and knows these categories, else one trained (and saved
    there) on ``dataset`` for ``epochs`` (``seconds`` caps the time)."""
    from atelier.gan.judge import judge_from_bytes, judge_to_bytes, train_judge

    if judge_path and Path(judge_path).exists():
        judge = judge_from_bytes(Path(judge_path).read_bytes())
        if judge.num_classes == len(dataset["class_names"]):
            return judge
        click.echo(f"{judge_path} judges other categories: training a new one", err=True)
    click.echo(f"training the judge ({epochs} epochs)", err=True)
    judge, info = train_judge(dataset, seed=0, epochs=epochs, seconds=seconds)
    click.echo(
        f"judge: {info['heldout_accuracy']:.3f} on held-out photos after {info['epochs']} epochs", err=True
    )
    if judge_path:
        Path(judge_path).write_bytes(judge_to_bytes(judge))
    return judge


def _judge_options(f):
    f = click.option("--judge-seconds", type=float, default=None, help="cap on the judge's training time")(f)
    f = click.option(
        "--judge-epochs",
        type=click.IntRange(1),
        default=25,
        show_default=True,
        help="the judge's epochs (cosine schedule: the same ruler on any machine)",
    )(f)
    return click.option(
        "--judge",
        "judge_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="judge file: loaded if it exists and knows the categories, else trained and saved there",
    )(f)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _precision_option(f):
    return click.option(
        "--precision",
        type=click.Choice(["bf16", "fp32"]),
        default=None,
        help="autocast precision of the G and D passes (default: bf16 on CUDA; on the CPU fp32, except "
        "training on a CPU with AMX or AVX512-BF16: bf16)",
    )(f)


@click.group()
def gan():
    """Train, sample and evaluate GANs locally (no API, queue or S3)."""


# Fields that --set must not change behind the option or data that decides them (a preset's widths and
# R1 gamma follow --preset and --resolution; the categories come from DATA).
_OWN_OPTIONS = {
    "preset": "use --preset",
    "arch": "use --arch",
    "resolution": "use --resolution",
    "num_classes": "the categories are DATA's folders",
}


# What --set accepts for a flag field; anything else is refused rather than read as false.
_FLAG_WORDS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)


def _parse_overrides(cfg, overrides: tuple[str, ...]) -> dict:  # noqa: ANN001 - GanConfig
    """`FIELD=VALUE` pairs over a preset, each VALUE parsed as the field's current type."""
    values = cfg.to_dict()
    parsed: dict = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or name not in values:
            known = ", ".join(sorted(values))
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {known}")
        if name in _OWN_OPTIONS:
            raise ValueError(f"--set {name}: {_OWN_OPTIONS[name]}")
        current = values[name]
        if isinstance(current, bool):
            if raw.lower() not in _FLAG_WORDS:
                raise ValueError(f"--set {name}: {raw!r} is not a flag (true/false, yes/no, on/off, 1/0)")
            parsed[name] = _FLAG_WORDS[raw.lower()]
        elif isinstance(current, (int, float)):
            try:
                parsed[name] = type(current)(raw)
            except ValueError:
                raise ValueError(f"--set {name}: {raw!r} is not a {type(current).__name__}") from None
        elif isinstance(current, str):
            parsed[name] = raw
        elif isinstance(current, list) and all(isinstance(v, (int, float)) for v in current):
            # A list of numbers (Adam's betas): as many comma-separated numbers as the preset holds.
            try:
                numbers = [float(v) for v in raw.split(",")]
            except ValueError:
                raise ValueError(f"--set {name}: {raw!r} is not a list of numbers, e.g. 0,0.99") from None
            if len(numbers) != len(current):
                raise ValueError(
                    f"--set {name}: expected {len(current)} comma-separated numbers, got {raw!r}"
                )
            parsed[name] = numbers
        else:
            raise ValueError(f"--set {name}: only number, flag, text and number-list fields can be set here")
    if "augment" in parsed:
        from atelier.gan.augment import parse_policy

        try:
            parse_policy(parsed["augment"])
        except ValueError as exc:
            raise ValueError(f"--set augment: {exc}") from None
    return parsed


def _with_overrides(cfg, overrides: tuple[str, ...]):  # noqa: ANN001, ANN202 - GanConfig
    from atelier.gan.config import GanConfig

    return GanConfig.from_dict({**cfg.to_dict(), **_parse_overrides(cfg, overrides)})


def _distributed_options(f):
    f = click.option(
        "--checkpoint-every",
        type=click.IntRange(1),
        default=None,
        help="also write OUT/checkpoint.pt every N steps (a killed run resumes there)",
    )(f)
    f = click.option(
        "--master-port", type=click.IntRange(1, 65535), default=None, help="default: a free one"
    )(f)
    f = click.option("--master-addr", default="127.0.0.1", show_default=True, help="node 0's address")(f)
    f = click.option("--node-rank", type=click.IntRange(0), default=0, show_default=True)(f)
    f = click.option("--nnodes", type=click.IntRange(1), default=1, show_default=True, help="hosts")(f)
    return click.option(
        "--nproc",
        type=click.IntRange(1),
        default=1,
        show_default=True,
        help="ranks on this host (batch_size is the global batch, split over nproc x nnodes ranks)",
    )(f)


def _join(nproc, nnodes, node_rank, master_addr, master_port, device):  # noqa: ANN001, ANN202
    from atelier.gan.launch import DistributedTrainingError, join_distributed

    if not master_port:
        raise click.BadParameter(
            "a host other than node 0 must be told node 0's port", param_hint="--master-port"
        )
    try:
        out = join_distributed(
            nproc=nproc,
            nnodes=nnodes,
            node_rank=node_rank,
            master_addr=master_addr,
            master_port=master_port,
            device=device,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    except DistributedTrainingError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(out))


# What `atelier gan train` prints of its evaluation (all of it is in OUT/metrics.json).
EVAL_SUMMARY = (
    "gan_test_accuracy",
    "judge_heldout_accuracy",
    "kid",
    "recall",
    "recall_ratio",
    "diversity",
    "diversity_min",
    "diversity_by_category",
    "recall_by_category",
)


def _by_category(values: list | None, names: list[str]) -> dict | None:
    return (
        None
        if values is None
        else {n: (None if v is None else round(v, 3)) for n, v in zip(names, values, strict=True)}
    )


@gan.command()
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False),
    help="one folder per category (required, except on hosts other than node 0)",
)
@click.option("--out", type=click.Path(file_okay=False), help="required, except on hosts other than node 0")
@click.option(
    "--preset", default="tiny", show_default=True, type=click.Choice(["tiny", "small", "base", "large"])
)
@click.option("--arch", default="atelier", show_default=True, type=click.Choice(["atelier", "dcgan"]))
@click.option("--resolution", type=int, default=None, help="power of two, 16..256 (default: the preset's)")
@click.option("--minutes", type=float, default=None, help="wall-clock budget")
@click.option("--steps", type=int, default=None, help="step budget (whichever of minutes/steps ends first)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--resume/--no-resume", default=True, show_default=True, help="continue OUT/checkpoint.pt if present"
)
@click.option(
    "--finetune-from",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a parent checkpoint to continue on DATA as the nightly retrain does (its G_ema, Adam moments "
    "and weight shapes; the preset's training settings)",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="override one preset field for an ablation, e.g. --set aux_weight=0.2 (repeatable)",
)
@click.option(
    "--cache", type=click.Path(file_okay=False), default=None, help="folder for the prepared tensor file"
)
@click.option(
    "--sweep/--no-sweep",
    default=True,
    show_default=True,
    help="after training, choose the model's default truncation with the judge (default: OUT/judge.pt), "
    "as a training job does",
)
@_judge_options
@click.option("--threads", type=int, default=None, help="torch CPU threads (per rank with --nproc)")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available)")
@_precision_option
@_distributed_options
def train(
    data, out, preset, arch, resolution, minutes, steps, seed, resume, finetune_from, overrides, cache,
    sweep, judge_path, judge_epochs, judge_seconds, threads, device, precision,
    nproc, nnodes, node_rank, master_addr, master_port, checkpoint_every,
):  # fmt: skip
    """Train a GAN on DATA and write checkpoint.pt, grid.png and losses.png to OUT."""
    import torch

    if node_rank > 0:  # this host only runs ranks; node 0 sends them settings, weights and data
        return _join(nproc, nnodes, node_rank, master_addr, master_port, device)
    for name, value in (("--data", data), ("--out", out)):
        if not value:
            raise click.UsageError(f"Missing option '{name}'.")
    from atelier.gan.config import preset_config
    from atelier.gan.figures import category_chart_png, loss_curve_png, sample_grid_png
    from atelier.gan.launch import DistributedTrainingError, run_distributed_segment
    from atelier.gan.rank import write_atomic
    from atelier.gan.sampling import load_generator
    from atelier.gan.training import (
        checkpoint_from_bytes,
        checkpoint_to_bytes,
        finetune_state,
        new_state,
        state_from_checkpoint,
        state_to_checkpoint,
    )
    from atelier.gan.training import train as train_loop

    distributed = nproc * nnodes > 1
    if not distributed:
        _set_threads(threads)
    if minutes is None and steps is None:
        minutes = 10.0
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    try:
        cfg = _with_overrides(preset_config(preset, resolution, arch), overrides)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    dataset = _load_dataset(data, cfg.resolution, cache)
    names = dataset["class_names"]
    click.echo(f"{dataset['images'].shape[0]} images, {len(names)} categories: {', '.join(names)}", err=True)
    fast = {"precision": precision}  # channels_last: the device default (NHWC on CPU and CUDA)
    device_for_ranks = device
    if distributed:
        # The ranks hold the model on their devices; this process keeps its copy in host memory.
        from atelier.gan.training import default_train_precision

        fast, device = {"precision": precision or default_train_precision(device)}, "cpu"
    if resume and ckpt_path.exists():
        if overrides:
            # A resumed run keeps the config it started with: a silently ignored --set would mislabel
            # an ablation.
            raise click.BadParameter(
                f"{ckpt_path} exists and is resumed with its own config; use --no-resume to train "
                "a new model with these settings",
                param_hint="--set",
            )
        state = state_from_checkpoint(checkpoint_from_bytes(ckpt_path.read_bytes()), device=device, **fast)
        if state.class_names != names:
            raise click.ClickException(f"{ckpt_path} was trained on other categories; use --no-resume")
        click.echo(f"resuming at step {state.step}", err=True)
    elif finetune_from:
        parent = checkpoint_from_bytes(Path(finetune_from).read_bytes())
        try:
            state = finetune_state(
                parent, names, seed=seed, device=device, overrides=_parse_overrides(cfg, overrides), **fast
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--set") from exc
        click.echo(f"fine-tuning {finetune_from} (its step {parent['step']}) on {data}", err=True)
    else:
        state = new_state(cfg, names, seed=seed, device=device, **fast)

    def progress(p):
        click.echo(
            f"step {p['step']}  loss_d {p['loss_d']:.3f}  loss_g {p['loss_g']:.3f}  "
            f"{p['steps_per_s']:.2f} steps/s  cpu {p['cpu_s']:.0f}s",
            err=True,
        )

    seconds = None if minutes is None else minutes * 60
    if distributed:
        try:
            run_distributed_segment(
                state, dataset, nproc=nproc, nnodes=nnodes, master_addr=master_addr, master_port=master_port,
                steps=steps, seconds=seconds, progress_fn=progress, progress_every=100,
                device=device_for_ranks, checkpoint_path=ckpt_path, checkpoint_every=checkpoint_every,
                threads=threads, seed=seed, workdir=out_dir / "ranks",
            )  # fmt: skip
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        except DistributedTrainingError as exc:
            raise click.ClickException(
                f"{exc}\nrun the same command again to resume from {ckpt_path}"
            ) from exc
    else:
        start = state.step

        def boundary() -> bool:  # the periodic checkpoint, at a step boundary
            if checkpoint_every and state.step > start and state.step % checkpoint_every == 0:
                write_atomic(ckpt_path, checkpoint_to_bytes(state_to_checkpoint(state)))
            return False

        train_loop(
            state, dataset, steps=steps, seconds=seconds, progress_fn=progress, progress_every=100,
            abort_fn=boundary if checkpoint_every else None,
        )  # fmt: skip
    ckpt = state_to_checkpoint(state)
    if not distributed:  # with ranks, rank 0 has written it
        ckpt_path.write_bytes(checkpoint_to_bytes(ckpt))
    # Sampling (the sweep, the grid) takes the sampling default where it runs, unless --precision says.
    G, _, _ = load_generator(ckpt, device, precision)
    truncation, summary = 1.0, None
    if sweep:  # the trained checkpoint is already on disk: a failed sweep loses no training
        from atelier.core.config import get_settings
        from atelier.gan.metrics import SWEPT_CHECKPOINT_FIELDS, chosen_truncation, swept_metrics

        judge = _judge(judge_path or out_dir / "judge.pt", dataset, judge_epochs, judge_seconds)
        settings = get_settings()
        click.echo(f"truncation sweep over {', '.join(map(str, settings.truncation_values))}", err=True)
        # seeds 20,000+: neither `gan eval`'s (10,000+) nor `gan sample`'s (0+)
        swept = swept_metrics(
            G, judge, dataset, settings.truncation_values, n_per_class=settings.eval_per_class,
            seed=20_000, max_real=settings.eval_max_real, **settings.sweep_limits,
        )  # fmt: skip
        truncation = chosen_truncation(swept)
        ckpt.update({k: swept[k] for k in SWEPT_CHECKPOINT_FIELDS})
        ckpt_path.write_bytes(checkpoint_to_bytes(ckpt))
        swept["diversity_by_category"] = _by_category(swept.get("diversity_per_class"), names)
        swept["recall_by_category"] = _by_category(swept.get("recall_ratio_per_class"), names)
        (out_dir / "metrics.json").write_text(json.dumps(swept, indent=1))
        (out_dir / "categories.png").write_bytes(
            category_chart_png(swept, names, settings.truncation_min_diversity)
        )
        summary = {k: swept.get(k) for k in EVAL_SUMMARY}
        # The gate's own verdict on variety, as a nightly retrain would apply it.
        from atelier.training.evaluation import variety_refusal

        summary["variety"] = (
            variety_refusal(
                swept,
                min_diversity=settings.promotion_min_diversity,
                min_recall=settings.promotion_min_recall,
            )
            or "varied enough to promote"
        )
    (out_dir / "grid.png").write_bytes(sample_grid_png(G, names, per_row=8, seed=seed, truncation=truncation))
    (out_dir / "losses.png").write_bytes(loss_curve_png(state.history))
    click.echo(
        json.dumps(
            {
                "step": state.step,
                **({"ranks": nproc * nnodes} if distributed else {}),
                "precision": state.precision,
                "default_truncation": ckpt.get("default_truncation", 1.0),
                "class_truncation": ckpt.get("class_truncation"),
                "checkpoint": str(ckpt_path),
                "grid": str(out_dir / "grid.png"),
                "losses": str(out_dir / "losses.png"),
                **({"eval": summary, "metrics": str(out_dir / "metrics.json")} if summary else {}),
            }
        )
    )


@gan.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--per-category", type=int, default=70, show_default=True)
@click.option("--category", "categories", multiple=True, help="only these categories (repeatable)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--truncation",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="default: the model's own (chosen by the sweep of `atelier gan train` or `gan eval --sweep`)",
)
@click.option("--device", default=None)
@_precision_option
def sample(checkpoint, out, per_category, categories, seed, truncation, device, precision):
    """Write OUT/<category>/<index>.png; image i (over the whole request) has seed SEED + i."""
    import torch

    from atelier.gan.sampling import encode_png, generate, load_generator, resolve_truncation
    from atelier.gan.training import checkpoint_from_bytes
    from atelier.generation.batches import run_batches

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = checkpoint_from_bytes(Path(checkpoint).read_bytes())
    G, cfg, names = load_generator(ckpt, device, precision)
    truncation = resolve_truncation(G, truncation)  # None: the model's own, per category where chosen
    unknown = [c for c in categories if c not in names]
    if unknown:
        raise click.BadParameter(
            f"unknown categories {unknown}; the model knows {names}", param_hint="--category"
        )
    chosen = [c for c in names if not categories or c in categories]
    labels = [names.index(c) for c in chosen for _ in range(per_category)]
    out_dir = Path(out)
    for c in chosen:
        (out_dir / c).mkdir(parents=True, exist_ok=True)

    def produce(indices: list[int]):  # noqa: ANN202
        return generate(
            G, seeds=[seed + i for i in indices], labels=[labels[i] for i in indices], truncation=truncation
        )

    def encode(image, i: int) -> int:  # noqa: ANN001
        y = labels[i]
        text = {
            "generator": f"atelier-{cfg.arch}",
            "seed": seed + i,
            "category": names[y],
            "truncation": truncation[y] if isinstance(truncation, list) else truncation,
        }
        (out_dir / names[y] / f"{i}.png").write_bytes(encode_png(image, text=text))
        return 1

    # the worker's own generate-while-encoding loop: PNG encoding on every core meanwhile
    done: list[int] = []
    run_batches(range(len(labels)), produce=produce, encode=encode, consume=done.extend, batch=256)
    written = len(done)
    click.echo(json.dumps({"written": written, "out": str(out_dir), "categories": chosen}))


@gan.command(name="eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False))
@_judge_options
@click.option("--n-per-class", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=10_000, show_default=True)
@click.option("--truncation", type=click.FloatRange(0.0, 1.0), default=None, help="default: the model's own")
@click.option(
    "--sweep",
    is_flag=True,
    help="evaluate truncation 1.0/0.9/0.8/0.7, store the chosen default in the checkpoint",
)
@click.option(
    "--recall-draws",
    type=click.IntRange(0, 50),
    default=0,
    show_default=True,
    help="also report recall_ratio's mean and sd over this many independent draws of designs",
)
@click.option("--cache", type=click.Path(file_okay=False), default=None)
@click.option("--threads", type=int, default=None)
def eval_cmd(
    checkpoint,
    data,
    judge_path,
    judge_epochs,
    judge_seconds,
    n_per_class,
    seed,
    truncation,
    sweep,
    recall_draws,
    cache,
    threads,
):
    """Print JSON metrics: judge accuracy, GAN-test accuracy, KID, precision/recall, novelty."""
    from atelier.gan.metrics import SWEPT_CHECKPOINT_FIELDS, evaluate, recall_over_draws, swept_metrics
    from atelier.gan.sampling import load_generator
    from atelier.gan.training import checkpoint_from_bytes, checkpoint_to_bytes

    _set_threads(threads)
    ckpt = checkpoint_from_bytes(Path(checkpoint).read_bytes())
    G, cfg, names = load_generator(ckpt, "cpu")
    dataset = _load_dataset(data, cfg.resolution, cache)
    if dataset["class_names"] != names:
        raise click.ClickException(f"categories differ: checkpoint {names}, data {dataset['class_names']}")
    judge = _judge(judge_path, dataset, judge_epochs, judge_seconds)
    if sweep:
        from atelier.core.config import get_settings

        settings = get_settings()
        metrics = swept_metrics(
            G, judge, dataset, settings.truncation_values, n_per_class=n_per_class, seed=seed,
            **settings.sweep_limits,
        )  # fmt: skip
        ckpt.update({k: metrics[k] for k in SWEPT_CHECKPOINT_FIELDS})
        Path(checkpoint).write_bytes(checkpoint_to_bytes(ckpt))
    else:
        metrics = evaluate(G, judge, dataset, n_per_class=n_per_class, seed=seed, truncation=truncation)
    if recall_draws:
        try:
            chosen = metrics["truncation"]
            metrics.update(recall_over_draws(G, judge, dataset, recall_draws, seed=seed, truncation=chosen))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--recall-draws") from exc
    metrics.update(
        step=ckpt["step"], arch=cfg.arch, generator=cfg.generator, preset=cfg.preset,
        resolution=cfg.resolution, categories=names,
        diversity_by_category=_by_category(metrics.get("diversity_per_class"), names),
        recall_by_category=_by_category(metrics.get("recall_ratio_per_class"), names),
    )  # fmt: skip
    json.dump(metrics, sys.stdout)
    sys.stdout.write("\n")


@gan.command()
@click.option("--candidate", required=True, type=click.File(), help="its `atelier gan eval` JSON")
@click.option("--production", required=True, type=click.File(), help="its `atelier gan eval` JSON")
@click.option("--kid-tolerance", type=float, default=0.0, show_default=True, help="added to the KID margin")
@click.option("--sigmas", type=float, default=None, help="default: ATELIER_PROMOTION_SIGMAS")
@click.option("--min-diversity", type=float, default=None, help="default: ATELIER_PROMOTION_MIN_DIVERSITY")
@click.option("--min-recall", type=float, default=None, help="default: ATELIER_PROMOTION_MIN_RECALL")
def gate(candidate, production, kid_tolerance, sigmas, min_diversity, min_recall):
    """Print the nightly promotion gate's verdict on two evaluations of the same judge and data."""
    from atelier.core.config import get_settings
    from atelier.training.evaluation import promotion_gate

    settings = get_settings()
    sigmas = settings.promotion_sigmas if sigmas is None else sigmas
    min_diversity = settings.promotion_min_diversity if min_diversity is None else min_diversity
    min_recall = settings.promotion_min_recall if min_recall is None else min_recall
    name = Path(production.name).name  # the file stands for the production model's id
    promote, reason = promotion_gate(
        json.load(candidate), json.load(production), name, tolerance=kid_tolerance, sigmas=sigmas,
        min_diversity=min_diversity, min_recall=min_recall,
    )  # fmt: skip
    json.dump(
        {"promote": promote, "reason": reason, "sigmas": sigmas, "min_diversity": min_diversity,
         "min_recall": min_recall},
        sys.stdout,
    )  # fmt: skip
    sys.stdout.write("\n")


if __name__ == "__main__":
    gan()
