"""Generated image rows: upserted on (job, index), counted per chunk range, read in keyset pages.

A re-delivered chunk regenerates only the indices without a row, and an upsert makes a repeat of any
index harmless: the same seed writes the same bytes under the same key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from atelier.core.models import GeneratedImage


def upsert_images(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or update generated_images rows on (job_id, index), in one statement."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(GeneratedImage).values(rows)
    updated = {c: stmt.excluded[c] for c in rows[0] if c not in ("job_id", "index")}
    session.execute(stmt.on_conflict_do_update(index_elements=["job_id", "index"], set_=updated))


def indices_in_range(session: Session, job_id: str, start: int, stop: int) -> set[int]:
    """The indices in [start, stop) that have a row: an index range scan, O(chunk) not O(job)."""
    return set(
        session.scalars(
            select(GeneratedImage.index).where(
                GeneratedImage.job_id == job_id, GeneratedImage.index >= start, GeneratedImage.index < stop
            )
        )
    )


def count_images(session: Session, job_id: str) -> int:
    return session.execute(
        select(func.count()).select_from(GeneratedImage).where(GeneratedImage.job_id == job_id)
    ).scalar_one()


def iter_images(session: Session, job_id: str, batch: int = 1000) -> Iterator[GeneratedImage]:
    """Every image row of a job by index, fetched in keyset pages (constant memory)."""
    last = -1
    while True:
        rows = list(
            session.scalars(
                select(GeneratedImage)
                .where(GeneratedImage.job_id == job_id, GeneratedImage.index > last)
                .order_by(GeneratedImage.index)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].index
        session.expunge_all()
