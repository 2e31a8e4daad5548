"""Keyset (cursor) pagination, newest first: stable under concurrent inserts, O(limit) per page."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

MAX_LIMIT = 500


class BadCursor(ValueError):
    pass


def encode_cursor(at: datetime, ident: str | int) -> str:
    raw = json.dumps({"t": at.isoformat(), "id": ident}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        return datetime.fromisoformat(data["t"]), data["id"]
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
        at, ident = decode_cursor(cursor)
        stmt = stmt.where(or_(time_col < at, and_(time_col == at, id_col < ident)))
    rows = list(session.scalars(stmt.order_by(time_col.desc(), id_col.desc()).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(getattr(last, time_col.key), getattr(last, id_col.key))
    return rows, next_cursor
