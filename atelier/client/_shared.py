"""The parts of waiting, streaming, uploading and downloading that do not depend on sync or async:
the event-stream decoder, the wait bookkeeping, folder batches and the download's file handling."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from atelier.client import models as m
from atelier.client.errors import ChecksumMismatch, WaitTimeout

T = TypeVar("T")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
OnUpdate = Callable[[m.Job], None]


class EventStream:
    """Server-sent events, line by line: `feed` returns the job of each complete `data:` event."""

    def __init__(self) -> None:
        self.data: list[str] = []

    def feed(self, line: str) -> m.Job | None:
        if line.startswith("data:"):
            self.data.append(line[5:].strip())
        elif not line and self.data:
            body, self.data = "\n".join(self.data), []
            return m.Job.model_validate_json(body)
        return None


class Follower:
    """One wait: reports each change of (status, progress) once, and knows its deadline."""

    def __init__(self, job_id: str, timeout: float, on_update: OnUpdate | None):
        self.job_id, self.timeout, self.on_update = job_id, timeout, on_update
        self.deadline = time.monotonic() + timeout
        self.last: tuple[str, int] | None = None

    def see(self, job: m.Job) -> bool:
        """True once the job has ended."""
        seen = (job.status, job.progress.done)
        if self.on_update is not None and seen != self.last:  # changes only: logs stay readable
            self.on_update(job)
        self.last = seen
        return job.ended

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    @property
    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def timed_out(self, job: m.Job) -> WaitTimeout:
        return WaitTimeout(f"job {self.job_id} still {job.status} after {self.timeout:.0f} s", job)


# ---------------------------------------------------------------- uploads


def folder_batches(directory: Path, batch: int) -> Iterator[tuple[str, list[Path]]]:
    """(category, photos) batches of DIRECTORY/<category>/<photo>, in a stable order."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    photos = sorted(
        p for p in Path(directory).rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
    )
    by_category: dict[str, list[Path]] = {}
    for p in photos:
        by_category.setdefault(p.parent.name, []).append(p)
    for category, paths in sorted(by_category.items()):
        for i in range(0, len(paths), batch):
            yield category, paths[i : i + batch]


def add_upload(total: m.FolderUpload, result: m.UploadResult) -> m.FolderUpload:
    dupes = sum(a.duplicate for a in result.accepted)
    return m.FolderUpload(
        accepted=total.accepted + len(result.accepted) - dupes,
        duplicates=total.duplicates + dupes,
        rejected=[*total.rejected, *result.rejected],
        jobs=[*total.jobs, *([result.job] if result.job else [])],
    )


def as_files(files: list[Path | str | tuple[str, bytes | Path]]) -> list[tuple[str, bytes | Path]]:
    out: list[tuple[str, bytes | Path]] = []
    for f in files:
        if isinstance(f, tuple):
            out.append(f)
        else:
            out.append((Path(f).name, Path(f)))
    return out


# ---------------------------------------------------------------- downloads

DOWNLOAD_ATTEMPTS = 3
CHUNK = 1 << 16


def sha256_of(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Target:
    """One file to fetch into `path` through `path.part`; a partial part file is resumed."""

    url: str
    path: Path
    sha256: str | None = None

    @property
    def part(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    def already_there(self) -> bool:
        return self.sha256 is not None and sha256_of(self.path) == self.sha256

    def resume_headers(self) -> dict[str, str]:
        have = self.part.stat().st_size if self.part.exists() else 0
        return {"Range": f"bytes={have}-"} if have else {}

    def open_part(self, status: int):  # noqa: ANN201
        """The part file to write an answer of `status` into: appended for 206, restarted for 200."""
        return self.part.open("ab" if status == 206 else "wb")

    def settle(self) -> None:
        """Check the sha256 (when known) and move the part file to its name: never a half-written file
        under the final name; a mismatch removes the part file."""
        if self.sha256 is not None:
            got = sha256_of(self.part)
            if got != self.sha256:
                self.part.unlink(missing_ok=True)
                raise ChecksumMismatch(
                    f"{self.path.name}: sha256 {got} is not {self.sha256}; removed the part file"
                )
        os.replace(self.part, self.path)


def image_target(directory: Path, image: m.GeneratedImage) -> Target:
    return Target(image.url, Path(directory) / image.filename, image.sha256)


def tally(report: m.DownloadReport, outcome: tuple[str, int, str | None]) -> m.DownloadReport:
    kind, size, reason = outcome
    return report.model_copy(
        update={
            kind: getattr(report, kind) + 1,
            "bytes": report.bytes + size,
            "failures": report.failures + ([reason] if reason else []),
        }
    )


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
