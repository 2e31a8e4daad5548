"""A data set ZIP into the catalogue, in the ingest worker: the body of an import `ingest` job.

    ZIP from S3 to a temporary folder ── archives.extract_tree (the upload caps; annotation
    files and photos only) ── deepfashion.read_annotations (malformed lines become problems)
    ── batches of photos, by category ── service.ingest_uploads (validation, dedupe, metadata
    stripping, as uploads) ── prepare(ids) ── the unit's spec records how far it got

Resumable: the spec holds the next entry and the counts so far, so a re-delivered or stepped-aside
unit goes on from there; a batch redone after a kill finds its photos as duplicates, and preparing
skips photos already prepared, so nothing is stored twice. A long import steps aside every
ATELIER_IMPORT_SEGMENT_SECONDS (back in line at once, no delivery used), so no single delivery
approaches the task time limit.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atelier.catalogue import archives, deepfashion
from atelier.catalogue import service as catalogue
from atelier.core import jobs, units
from atelier.core.config import get_settings
from atelier.core.db import session_scope
from atelier.core.params import ImportSource
from atelier.core.scratch import scratch_dir
from atelier.core.storage import get_store
from atelier.workers.leases import Cancelled, Lease, StepAside

BATCH = 50  # photos per ingest call and per progress update
LISTED = 500  # problems and rejections listed in the result, each; their counts are always whole


def _counts(spec: dict[str, Any]) -> dict[str, Any]:
    base = {"accepted": 0, "duplicates": 0, "rejected": 0, "missing": 0, "per_category": {}, "rejections": []}
    return {**base, **(spec.get("counts") or {})}


def run_import(lease: Lease, source: ImportSource, *, prepare: Callable[[list[str]], int]) -> None:
    settings = get_settings()
    store = get_store()
    started = time.monotonic()
    segment = min(settings.import_segment_seconds, settings.task_soft_time_limit / 2)
    spec = dict(lease.unit.spec or {})
    start, counts = int(spec.get("next", 0)), _counts(spec)
    with scratch_dir("atelier-import-") as tmp:
        archive = Path(tmp) / "archive.zip"
        lease.retrying(lambda: store.download_file(source.archive_key, str(archive)), what="archive read")
        tree = Path(tmp) / "tree"
        with archive.open("rb") as f:
            refused = archives.extract_tree(
                f, tree, settings=settings, wanted=deepfashion.wanted_member(source.root)
            )
        archive.unlink()
        mapping = (
            deepfashion.load_mapping()
            if source.mapping is None
            else deepfashion.parse_mapping(source.mapping)
        )
        root = tree / source.root
        notes = deepfashion.read_annotations(
            root, mapping=mapping, partitions=tuple(source.partitions) if source.partitions else None
        )
        # by category (one ingest call per batch and category), in annotation order within each
        entries = sorted(notes.entries, key=lambda e: (e.category, e.line))
        total = len(entries)
        if start == 0:
            lease.event(
                "import_read",
                f"{total} photos mapped, {len(notes.problems)} annotation lines skipped, "
                f"{sum(notes.unmapped.values())} photos in unmapped categories",
                {"mapped": total, "skipped_lines": len(notes.problems), "unmapped": notes.unmapped},
            )
        lease.progress(start, total)
        for at in range(start, total, BATCH):
            _import_batch(root, entries[at : at + BATCH], source, counts, prepare)
            spec.update(next=min(at + BATCH, total), counts=counts)
            _save_spec(lease, dict(spec))
            lease.progress(spec["next"], total, info={"imported": counts["accepted"]})
            if lease.should_stop:
                raise Cancelled()
            if spec["next"] < total and time.monotonic() - started > segment:
                raise StepAside("import goes on in its next segment")
    problems = [str(p) for p in notes.problems]
    result = {
        "format": source.format,
        "mapped": total,
        **{k: counts[k] for k in ("accepted", "duplicates", "rejected", "missing")},
        "per_category": dict(sorted(counts["per_category"].items())),
        "unmapped": notes.unmapped,
        "skipped_lines": len(problems),
        "problems": problems[:LISTED],
        "rejections": (counts["rejections"] + [{"filename": r.name, "reason": r.reason} for r in refused])[
            :LISTED
        ],
    }
    message = (
        f"imported {counts['accepted']} new photos ({counts['duplicates']} already in the catalogue, "
        f"{counts['rejected']} rejected, {counts['missing']} missing) of {total} mapped; "
        f"{len(problems)} annotation lines skipped"
    )
    lease.succeed(
        then=lambda session, job: units.end_job(
            session=session, job=job, to=jobs.SUCCEEDED, result=result, message=message
        )
    )
    with contextlib.suppress(Exception):  # the import is done; a leftover archive only costs space
        store.delete(source.archive_key)


def _save_spec(lease: Lease, spec: dict[str, Any]) -> None:
    unit, worker = lease.unit.id, lease.unit.worker
    lease.sql(
        lambda s: units.set_spec(session=s, unit_id=unit, worker=worker, spec=spec), what="import progress"
    )


def _import_batch(
    root: Path,
    batch: list[deepfashion.Entry],
    source: ImportSource,
    counts: dict[str, Any],
    prepare: Callable[[list[str]], int],
) -> None:
    settings, store = get_settings(), get_store()
    by_category: dict[str, list[catalogue.UploadFile]] = {}
    for entry in batch:
        if not (root / entry.image).is_file():  # not in the ZIP, or refused by its caps (`rejections`)
            counts["missing"] += 1
            continue
        name, data = deepfashion.photo_bytes(
            root, entry, crop=source.crop, max_pixels=settings.max_image_pixels
        )
        by_category.setdefault(entry.category, []).append(catalogue.UploadFile(name, io.BytesIO(data)))
    ids: list[str] = []
    for category, uploads in sorted(by_category.items()):
        with session_scope() as session:
            result = catalogue.ingest_uploads(
                session=session,
                store=store,
                settings=settings,
                uploads=uploads,
                category=category,
                captured_at=source.captured_at,
            )
        for item in result.accepted:
            counts["duplicates" if item["duplicate"] else "accepted"] += 1
            counts["per_category"][category] = counts["per_category"].get(category, 0) + 1
            ids.append(item["id"])
        counts["rejected"] += len(result.rejected)
        room = LISTED - len(counts["rejections"])
        counts["rejections"] += result.rejected[: max(room, 0)]
    if ids:
        prepare(sorted(set(ids)))
