"""Keyset (cursor) pagination, the one dialect of every list: `?limit=&cursor=` ->
`{"items": [...], "next_cursor": ...}`, where a cursor is opaque (base64 of the last row's sort key).

    page(...)        newest first by (time, id): jobs, models, catalogue photos
    page_after(...)  ascending by one integer column: a job's events (id), its images (index)

Both are stable under concurrent inserts and O(limit) per page.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

MAX_LIMIT = 500
# a cursor's integers are SQL BIGINTs: a larger one would be a database error (500), not a bad cursor
BIGINT = 2**63


class BadCursor(ValueError):
    pass


def encode_cursor(*values: Any) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The values of a cursor that this API returned, as `types`; BadCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong shape")
        out = []
        for value, kind in zip(values, types, strict=True):
            if kind is datetime:
                at = datetime.fromisoformat(value)
                if at.tzinfo is None:
                    raise ValueError("a cursor time carries its zone")
                out.append(at)
            elif kind is int:
                if not isinstance(value, int) or isinstance(value, bool) or not -BIGINT <= value < BIGINT:
                    raise ValueError("not an integer")
                out.append(value)
            else:
                out.append(kind(value))
        return tuple(out)
    except Exception as exc:
        raise BadCursor("cursor is not one this API returned") from exc


def page(
    stmt: Select,
    *,
    session,  # noqa: ANN001
    time_col: InstrumentedAttribute,
    id_col: InstrumentedAttribute,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    if cursor:
        at, ident = decode_cursor(cursor, datetime, str)
        stmt = stmt.where(or_(time_col < at, and_(time_col == at, id_col < ident)))
    rows = list(session.scalars(stmt.order_by(time_col.desc(), id_col.desc()).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(getattr(last, time_col.key), getattr(last, id_col.key))
    return rows, next_cursor


def page_after(
    stmt: Select,
    *,
    session,
    col: InstrumentedAttribute,
    limit: int,
    cursor: str | None,  # noqa: ANN001
) -> tuple[list[Any], str | None]:
    if cursor:
        (after,) = decode_cursor(cursor, int)
        stmt = stmt.where(col > after)
    rows = list(session.scalars(stmt.order_by(col).limit(limit + 1)))
    next_cursor = encode_cursor(getattr(rows[limit - 1], col.key)) if len(rows) > limit else None
    return rows[:limit], next_cursor
