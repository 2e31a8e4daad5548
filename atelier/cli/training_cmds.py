"""`atelier submit train`, `atelier models ...`, `atelier schedules ...`: thin clients of the API."""

from __future__ import annotations

import json
from pathlib import Path

import click

from atelier.cli.options import (
    api_option,
    echo_json,
    exit_with_job,
    key_option,
    make_client,
    wait_timeout_option,
)
from atelier.client import Job, RetrainParams, TrainingRequest

_echo = echo_json


def training_progress_line(job: Job) -> str:
    p, info = job.progress, job.progress.info or {}
    losses = f" D {info['loss_d']:.3f} G {info['loss_g']:.3f}" if "loss_d" in info else ""
    eta = f" eta {job.eta_seconds:.0f}s" if job.eta_seconds else ""
    return f"\r{job.status:<10} step {p.done}/{p.total}{losses}{eta}   "


@click.command("train")
@click.option(
    "--preset", type=click.Choice(["tiny", "small", "base", "large"]), default="small", show_default=True
)
@click.option("--resolution", type=int, default=None, help="power of two 16..256 (default: the preset's)")
@click.option("--steps", type=int, default=10_000, show_default=True)
@click.option("--categories", default=None, help="comma-separated (default: every category)")
@click.option("--base-model", default=None, help="`production` or a version id to fine-tune")
@click.option("--arch", type=click.Choice(["atelier", "dcgan"]), default="atelier", show_default=True)
@click.option(
    "--promote", type=click.Choice(["if_better", "always", "never"]), default="if_better", show_default=True
)
@click.option("--seed", type=int, default=None)
@click.option(
    "--devices",
    type=int,
    default=None,
    help="torch.distributed ranks per segment on one worker host: GPUs, or gloo processes (default 1)",
)
@click.option("--webhook-url", default=None, help="POSTed a signed job event when the job ends")
@click.option("--idempotency-key", default=None, help="a repeat with the same key returns the same job")
@click.option("--wait", is_flag=True, help="show progress until the job ends; exit with its outcome")
@wait_timeout_option
@api_option
@key_option
def submit_train(
    preset, resolution, steps, categories, base_model, arch, promote, seed, devices, webhook_url,
    idempotency_key, wait, wait_timeout, api_url, key_file,
) -> None:  # noqa: ANN001  # fmt: skip
    """Start a training job (with --wait: exit 0 succeeded, 1 failed, 5 cancelled)."""
    client = make_client(api_url, key_file)
    request = TrainingRequest(
        preset=preset,
        resolution=resolution,
        steps=steps,
        arch=arch,
        promote=promote,
        categories=[c.strip() for c in categories.split(",")] if categories else None,
        base_model=base_model,
        seed=seed,
        devices=devices,
        webhook_url=webhook_url,
    )
    job = client.training.submit(request, idempotency_key=idempotency_key)
    if not wait:
        _echo(job)
        return
    from atelier.cli.progress import JobProgress

    with JobProgress("train", unit="step") as bar:  # stderr: stdout stays the job's JSON
        job = client.jobs.wait(job.id, timeout=wait_timeout, interval=1.0, on_update=bar.update)
    exit_with_job(job)


@click.group("models", invoke_without_command=True)
@api_option
@key_option
@click.pass_context
def models(ctx: click.Context, api_url: str, key_file: Path | None) -> None:
    """The model registry: with no command, lists the versions (* marks production)."""
    if ctx.invoked_subcommand is None:
        _list_models(api_url, key_file)


@models.command("list")
@api_option
@key_option
def models_list(api_url: str, key_file: Path | None) -> None:
    _list_models(api_url, key_file)


def _list_models(api_url: str, key_file: Path | None) -> None:
    client = make_client(api_url, key_file)
    for m in client.models.list():
        kid = (m.metrics or {}).get("kid")
        flag = "*" if m.production else " "
        kid_text = f"{kid:.4f}" if kid is not None else "-"
        click.echo(
            f"{flag} {m.id}  {m.arch:<7} {m.preset:<5} {m.resolution:>3}px  "
            f"steps {m.steps:<7} KID {kid_text}  {m.created_at.isoformat()}"
        )


@models.command("show")
@click.argument("model_id")
@api_option
@key_option
def models_show(model_id: str, api_url: str, key_file: Path | None) -> None:
    _echo(make_client(api_url, key_file).models.get(model_id))


@models.command("promote")
@click.argument("model_id")
@api_option
@key_option
def models_promote(model_id: str, api_url: str, key_file: Path | None) -> None:
    _echo(make_client(api_url, key_file).models.promote(model_id))


@click.group("schedules")
def schedules() -> None:
    """Cron schedules such as nightly-retrain."""


@schedules.command("list")
@api_option
@key_option
def schedules_list(api_url: str, key_file: Path | None) -> None:
    _echo(make_client(api_url, key_file).schedules.list())


@schedules.command("set")
@click.argument("name")
@click.option("--cron", required=True, help="e.g. '0 2 * * *' (UTC)")
@click.option("--disable", is_flag=True)
@click.option(
    "--param",
    "params",
    multiple=True,
    help="key=value, e.g. min_new_images=100 or webhook_url=https://... (JSON values)",
)
@api_option
@key_option
def schedules_set(name, cron, disable, params, api_url, key_file) -> None:  # noqa: ANN001
    parsed = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected key=value", param_hint="--param")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    try:
        RetrainParams(**parsed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from exc
    _echo(make_client(api_url, key_file).schedules.put(name, cron=cron, enabled=not disable, params=parsed))


@schedules.command("run")
@click.argument("name")
@api_option
@key_option
def schedules_run(name: str, api_url: str, key_file: Path | None) -> None:
    """Fire a schedule now."""
    _echo(make_client(api_url, key_file).schedules.run(name))
