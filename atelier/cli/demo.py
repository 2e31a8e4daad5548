"""`atelier demo`: the main job end to end on the embedded stack, with a catalogue it draws itself."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from atelier.catalogue.synthetic import CATEGORIES, catalogue_zip, make_catalogue
from atelier.cli.generation_cmds import demo_generate
from atelier.cli.stack import Stack
from atelier.cli.training_cmds import training_progress_line
from atelier.client import Client, TrainingRequest
from atelier.core.storage import ObjectStore


def run_demo(data_dir: Path | None, per_category: int, train_steps: int, *, keep: bool = False) -> int:
    data_dir = Path(data_dir or tempfile.mkdtemp(prefix="atelier-demo-"))
    click.echo(f"Starting the embedded stack in {data_dir} ...")
    t0 = time.monotonic()
    stack = Stack(data_dir)
    statuses: dict[str, str] = {}
    with stack:
        click.echo(f"  up in {time.monotonic() - t0:.1f} s: API {stack.api_url}, S3 {stack.s3_url}")
        client = Client(stack.api_url, stack.admin_key)
        stack_store = ObjectStore(stack.settings)
        bucket = stack.settings.s3_bucket
        items = make_catalogue(per_category, CATEGORIES, seed=7)
        click.echo(
            f"Drew a catalogue of {len(items)} garments in {len(CATEGORIES)} categories; uploading ..."
        )
        upload = client.catalogue.upload([("catalogue.zip", catalogue_zip(items))])
        click.echo(f"  accepted {len(upload.accepted)}, rejected {len(upload.rejected)}")
        ingest = client.jobs.wait(upload.job.id, timeout=300)
        statuses["ingest"] = ingest.status
        click.echo(f"ingest job {ingest.id}: {ingest.status} ({ingest.progress.done} photos prepared)")
        stats = client.catalogue.stats()
        click.echo(f"catalogue: {stats.total} images {stats.per_category}")

        click.echo(f"Training a tiny GAN ({train_steps} steps at 32 px) through the API ...")
        job = client.training.submit(TrainingRequest(preset="tiny", resolution=32, steps=train_steps))
        train = client.jobs.wait(
            job.id,
            timeout=3600,
            interval=1.0,
            on_update=lambda j: click.echo(training_progress_line(j), nl=False),
        )
        click.echo()
        statuses["train"] = train.status
        click.echo(f"train job {train.id}: {train.status}" + (f" ({train.error})" if train.error else ""))
        if train.status == "succeeded":
            result = train.result or {}
            metrics = result["metrics"]
            click.echo(
                f"  model {result['model_version']}: KID {metrics['kid']:.4f}, GAN-test accuracy "
                f"{metrics['gan_test_accuracy']:.2f} (judge held-out "
                f"{metrics['judge_heldout_accuracy']:.2f}), promoted: {result['promoted']}"
            )
            grid = data_dir / "sample-grid.png"
            grid.write_bytes(stack_store.get(result["grid_key"]))
            click.echo(f"  sample grid s3://{bucket}/{result['grid_key']} (copied to {grid})")

            gen = demo_generate(client, result["model_version"], per_category=20)
            statuses["generate"] = gen.status
            click.echo(f"generate job {gen.id}: {gen.status} ({gen.progress.done} designs)")
            if gen.result:
                click.echo(f"  manifest s3://{bucket}/{gen.result.get('manifest_key')}")
                if gen.result.get("archive_key"):
                    click.echo(f"  archive  s3://{bucket}/{gen.result['archive_key']}")
                designs = data_dir / "designs"
                report = client.generation.download(gen.id, designs)
                sheet = contact_sheet(designs, data_dir / "contact-sheet.png")
                click.echo(f"  downloaded {report.downloaded + report.skipped} designs to {designs}")
                click.echo(f"  contact sheet {sheet}")
                statuses["download"] = "succeeded" if not report.failed else "failed"
        click.echo("Results:")
        click.echo(
            f"  originals  s3://{stack.settings.s3_bucket}/catalogue/originals/ (SeaweedFS in {data_dir}/s3)"
        )
        click.echo(f"  prepared   s3://{stack.settings.s3_bucket}/catalogue/prepared/")
        click.echo(f"  models     s3://{stack.settings.s3_bucket}/models/")
        click.echo(f"  designs    s3://{stack.settings.s3_bucket}/generated/")
        click.echo(f"  database   {stack.env['ATELIER_DATABASE_URL']}")
        if statuses.get("generate") == "succeeded":
            click.echo(
                f"Open the designs: {data_dir / 'designs'}  (contact sheet {data_dir / 'contact-sheet.png'})"
            )
        client.close()
        if keep:
            keep_running(stack)
    click.echo("Stack stopped.")
    failed = {kind: status for kind, status in statuses.items() if status != "succeeded"}
    if failed:
        click.echo(f"demo FAILED: {failed}", err=True)
        return 1
    return 0


def contact_sheet(directory: Path, out: Path, *, cell: int = 96, columns: int = 12) -> Path:
    """One PNG of every design in `directory`, in index order, to see the batch at a glance; small
    designs are scaled up to the cell, so a 32 px batch is still something to look at."""
    from PIL import Image, ImageOps

    files = sorted(
        (p for p in directory.iterdir() if p.suffix in {".png", ".webp", ".jpeg", ".jpg"}),
        key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem,
    )
    rows = max(1, -(-len(files) // columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, path in enumerate(files):
        with Image.open(path) as img:
            img = ImageOps.contain(img.convert("RGB"), (cell - 4, cell - 4), Image.Resampling.LANCZOS)
            sheet.paste(img, ((i % columns) * cell + 2, (i // columns) * cell + 2))
    sheet.save(out)
    return out


def keep_running(stack: Stack) -> None:
    """`atelier demo --keep`: the stack and the gallery stay up until Ctrl-C or SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo("The stack keeps running (Ctrl-C stops it):")
    click.echo(f"  gallery   {stack.api_url}/ui")
    click.echo(f"  admin key {stack.admin_key}   (also in {stack.data_dir / 'admin.key'})")
    click.echo(f"  API       {stack.api_url}/docs   metrics {stack.api_url}/metrics")
    while not stop.wait(1.0):
        for name in stack.supervise_once():
            click.echo(f"  restarted {name} (exited unexpectedly)")
