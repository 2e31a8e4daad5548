"""The database's clock, for every lease time: `db_now()` is a SQL expression evaluated by the database
in the statement that uses it, never a value from the worker's own clock.

    UPDATE work_units SET heartbeat_at = db_now() WHERE ...              the heartbeat
    ... WHERE heartbeat_at < db_now(-stale_after_seconds)                the steal test of a claim

Hosts whose clocks disagree by minutes then agree on every lease: a worker ahead of the database
cannot make a live lease look stale, and one behind it cannot keep a dead lease looking fresh.

    PostgreSQL   statement_timestamp() (+ an interval): the time the statement began, so a long
                 transaction does not freeze the clock the way now() would
    SQLite       strftime('%Y-%m-%d %H:%M:%f', 'now', '+N seconds'), padded to the microsecond text
                 that SQLAlchemy stores, so stored and computed times compare as text correctly
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from atelier.core.models.base import UTCDateTime


class db_now(FunctionElement):  # noqa: N801 - reads as the SQL function it stands for
    """The database's current time plus `offset_seconds` (negative: in the past)."""

    type = UTCDateTime()
    name = "db_now"
    inherit_cache = True

    def __init__(self, offset_seconds: float = 0.0):
        super().__init__(literal(float(offset_seconds), Float()))


@compiles(db_now)
def _generic(element: db_now, compiler, **kw) -> str:  # noqa: ANN001
    offset = compiler.process(element.clauses, **kw)
    return f"(CURRENT_TIMESTAMP + ({offset}) * INTERVAL '1 second')"


@compiles(db_now, "postgresql")
def _postgresql(element: db_now, compiler, **kw) -> str:  # noqa: ANN001
    offset = compiler.process(element.clauses, **kw)
    return f"(statement_timestamp() + make_interval(secs => CAST({offset} AS double precision)))"


@compiles(db_now, "sqlite")
def _sqlite(element: db_now, compiler, **kw) -> str:  # noqa: ANN001
    offset = compiler.process(element.clauses, **kw)
    # '%f' is SS.SSS; three zeros make it the SS.ffffff that SQLAlchemy writes for a datetime
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', CAST({offset} AS TEXT) || ' seconds')"


def db_time(session: Session, offset_seconds: float = 0.0) -> datetime:
    """Read the database's clock once (for a pass that compares many rows with one `now`)."""
    return session.execute(select(db_now(offset_seconds))).scalar_one()
