"""Who may see a job and what it made.

    admin key        every job (scheduled retrains, which have no key, included)
    any other key    only the jobs it submitted: their rows, events, images, manifests, archives,
                     try-on previews and trend reports, in listings, reads and as inputs to new jobs

A job of another key answers exactly as a job that does not exist (404 on reads, 422 naming the field
on inputs), so that an id says nothing about whether it exists. Models and the catalogue are shared by
the whole company and are not owned.

`viewer` is anything with an `id` and `scopes` (the API's KeyInfo, the gallery's ApiKey row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Select

from atelier.core.models import Job


class Viewer(Protocol):
    id: str
    scopes: Sequence[str]


def is_admin(viewer: Viewer) -> bool:
    return "admin" in viewer.scopes


def may_see(viewer: Viewer, job: Job | None) -> bool:
    """True when `job` exists and belongs to `viewer` (or `viewer` is an admin)."""
    if job is None:
        return False
    return is_admin(viewer) or (job.api_key_id is not None and job.api_key_id == viewer.id)


def visible(stmt: Select, viewer: Viewer) -> Select:
    """`stmt` (a select over Job) narrowed to the jobs `viewer` may see."""
    return stmt if is_admin(viewer) else stmt.where(Job.api_key_id == viewer.id)
