"""Progress bars on stderr, so that stdout carries only the JSON a script pipes into jq.

    with JobProgress("generate") as bar:
        job = client.wait(job_id, on_update=bar.update)

tqdm draws the bar (rate and ETA from what it has seen); the server's own ETA and status ride along
as the postfix. On a stderr that is not a terminal the bar is silent and one line per status change
is written instead, so CI logs stay short.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from tqdm import tqdm


class JobProgress:
    def __init__(self, label: str, unit: str = "img"):
        self.label, self.unit = label, unit
        self.bar: tqdm | None = None
        self.status: str | None = None
        self.tty = sys.stderr.isatty()

    def update(self, job: dict[str, Any]) -> None:
        done, total = job["progress"]["done"], job["progress"]["total"] or None
        if not self.tty:
            if job["status"] != self.status:
                click.echo(f"{self.label} {job['id']}: {job['status']} {done}/{total or '?'}", err=True)
            self.status = job["status"]
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(max(0, done - self.bar.n))
        eta = job.get("eta_seconds")
        self.bar.set_postfix_str(job["status"] + (f", server eta {eta:.0f}s" if eta else ""), refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> JobProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
