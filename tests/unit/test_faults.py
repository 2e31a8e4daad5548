"""Which errors are infrastructure (retried in place, never failing the job) and which are the work's own:
real errors raised by SQLite and, where configured, PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, text
from sqlalchemy.exc import OperationalError

from atelier.core import faults


def _raised(fn) -> BaseException:  # noqa: ANN001
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("nothing was raised")


@pytest.fixture
def engine(db_url):
    eng = create_engine(db_url)
    meta = MetaData()
    Table("t_faults", meta, Column("id", Integer, primary_key=True), Column("name", String(4), unique=True))
    meta.create_all(eng)
    yield eng
    meta.drop_all(eng)
    eng.dispose()


def _run(engine, stmt, params=None):  # noqa: ANN001, ANN202
    with engine.begin() as conn:
        conn.execute(stmt, params or {})


def test_permanent_sql_errors_are_not_infrastructure(engine):
    table = Table("t_faults", MetaData(), autoload_with=engine)
    _run(engine, insert(table).values(id=1, name="a"))
    errors = {
        "duplicate": _raised(lambda: _run(engine, insert(table).values(id=2, name="a"))),
        "unknown table": _raised(lambda: _run(engine, text("SELECT * FROM no_such_table_here"))),
        "syntax": _raised(lambda: _run(engine, text("SELEC 1"))),
    }
    if engine.dialect.name == "postgresql":  # SQLite stores a too long string as it is
        errors["too long"] = _raised(lambda: _run(engine, insert(table).values(id=3, name="abcdefgh")))
    for what, exc in errors.items():
        assert faults.is_permanent_sql(exc), what
        assert not faults.is_infrastructure(exc), what


def test_a_permanent_error_is_raised_at_once_not_retried_for_the_deadline(engine):
    calls = []

    def fn() -> None:
        calls.append(1)
        _run(engine, text("SELECT * FROM no_such_table_here"))

    with pytest.raises(Exception) as info:
        faults.retrying(fn, what="test", deadline=30.0)
    assert len(calls) == 1 and not isinstance(info.value, faults.InfrastructureUnavailable)


def test_a_locked_database_is_still_infrastructure():
    locked = OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))
    assert faults.is_infrastructure(locked)
    # a permanent error met while handling a fault is still permanent
    try:
        try:
            raise locked
        except OperationalError:
            raise sqlite3.IntegrityError("UNIQUE constraint failed: t.name") from None
    except sqlite3.IntegrityError as exc:
        exc.__context__ = locked
        assert not faults.is_infrastructure(exc)
