"""`atelier catalogue import --format deepfashion DIR`: a standard data set into the catalogue.

The annotations are read here (catalogue.deepfashion); the photos go through `POST /v1/catalogue/images`,
so they get the same validation, dedupe and metadata stripping as any upload. Resumable: the images of
every batch the API answered are appended to a state file, and a rerun skips them (a repeat would only
be a duplicate anyway). Malformed annotation lines and missing files are reported one per line; they
never stop the import.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import click

from atelier.catalogue import deepfashion
from atelier.cli.options import api_option, key_option, make_client


def default_state_file(directory: Path) -> Path:
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:10]
    return Path(f".atelier-import-{directory.resolve().name}-{digest}.done")


@click.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["deepfashion"]), default="deepfashion", show_default=True)
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON: DeepFashion category -> catalogue category (null skips); default: the shipped mapping",
)
@click.option(
    "--partition",
    "partitions",
    multiple=True,
    type=click.Choice(deepfashion.PARTITIONS),
    help="only these partitions of Eval/list_eval_partition.txt (repeatable); default: all",
)
@click.option(
    "--crop/--no-crop", default=True, show_default=True, help="crop to Anno/list_bbox.txt when present"
)
@click.option("--batch", type=int, default=50, show_default=True)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="progress file for resuming; default: .atelier-import-<dir>-<hash>.done here",
)
@api_option
@key_option
def catalogue_import(
    directory: Path,
    fmt: str,
    mapping: Path | None,
    partitions: tuple[str, ...],
    crop: bool,
    batch: int,
    state: Path | None,
    api_url: str,
    key_file: Path | None,
) -> None:
    """Import DIRECTORY in DeepFashion's Category and Attribute Prediction layout."""
    try:
        table = deepfashion.load_mapping(mapping)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mapping") from exc
    try:
        notes = deepfashion.read_annotations(directory, mapping=table, partitions=partitions or None)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="DIRECTORY") from exc
    for problem in notes.problems:
        click.echo(f"skipped {problem}", err=True)
    state = state or default_state_file(directory)
    done = set(state.read_text().split("\n")) if state.exists() else set()
    todo = [e for e in notes.entries if e.image not in done]
    click.echo(
        f"{len(notes.entries)} photos mapped, {len(notes.entries) - len(todo)} already imported "
        f"(state {state}), {sum(notes.unmapped.values())} in unmapped categories",
        err=True,
    )
    client = make_client(api_url, key_file)
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "missing": 0}
    per_category: dict[str, int] = {}
    t0 = time.monotonic()
    by_category: dict[str, list[deepfashion.Entry]] = {}
    for entry in todo:
        by_category.setdefault(entry.category, []).append(entry)
    sent = 0
    with state.open("a") as log:
        for category, entries in sorted(by_category.items()):
            for start in range(0, len(entries), batch):
                chunk = entries[start : start + batch]
                files, read = [], []
                for entry in chunk:
                    try:
                        files.append(deepfashion.photo_bytes(directory, entry, crop=crop))
                        read.append(entry)
                    except OSError as exc:  # reported, and tried again on the next run
                        counts["missing"] += 1
                        click.echo(
                            f"skipped {deepfashion.IMAGES}:{entry.line}: {exc.strerror}: {entry.image}",
                            err=True,
                        )
                if files:
                    result = client.catalogue.upload(files, category=category)
                    for item in result.accepted:
                        counts["duplicates" if item.duplicate else "accepted"] += 1
                        per_category[category] = per_category.get(category, 0) + 1
                    for r in result.rejected:
                        counts["rejected"] += 1
                        click.echo(f"rejected {r.filename}: {r.reason}", err=True)
                log.write("".join(f"{e.image}\n" for e in read))
                log.flush()
                sent += len(chunk)
                click.echo(f"imported {sent}/{len(todo)} ({category})", err=True)
    click.echo(
        json.dumps(
            {
                **counts,
                "per_category": dict(sorted(per_category.items())),
                "skipped_lines": len(notes.problems),
                "unmapped": notes.unmapped,
                "resumed_from": len(notes.entries) - len(todo),
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
    )
