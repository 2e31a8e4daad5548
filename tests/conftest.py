"""Shared fixtures. Every DB test runs on SQLite and, where ATELIER_TEST_DATABASE_URL is set, on
PostgreSQL too (each in a database of its own, created here and dropped at the end)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "clothing-small"


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("ATELIER_TEST_DATABASE_URL") else ["sqlite"]


class PostgresDatabases:
    """Creates throw-away databases on the server of ATELIER_TEST_DATABASE_URL."""

    def __init__(self, base_url: str):
        url = make_url(base_url)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        self.base = url
        self.created: list[str] = []

    def create(self) -> str:
        name = f"atelier_test_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        engine = create_engine(self.base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases | None]:
    url = os.environ.get("ATELIER_TEST_DATABASE_URL")
    if not url:
        yield None
        return
    dbs = PostgresDatabases(url)
    yield dbs
    dbs.drop_all()


BACKENDS = ("sqlite", "postgresql")


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """`one_backend`: a test whose subject is not SQL (the CLI's output, torch.distributed ranks, the
    webhook envelope) runs on one backend even where both are configured; the rest run on both."""
    keep, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("one_backend")
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = next((v for v in params.values() if isinstance(v, str) and v in BACKENDS), None)
        wanted = (marker.args[0] if marker and marker.args else "sqlite") if marker else None
        if wanted and backend and len(_backends()) > 1 and backend != wanted:
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def new_database_url(backend: str, tmp_path: Path, postgres: PostgresDatabases | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'atelier-{uuid.uuid4().hex[:8]}.db'}"
    assert postgres is not None
    return postgres.create()


@pytest.fixture(params=_backends())
def db_url(request, tmp_path, postgres) -> Iterator[str]:  # noqa: ANN001
    """A fresh, migrated database on each backend."""
    from atelier.core.db import dispose_engine
    from atelier.migrations import upgrade

    url = new_database_url(request.param, tmp_path, postgres)
    upgrade(url)
    yield url
    dispose_engine()


@pytest.fixture
def session(db_url):  # noqa: ANN001, ANN201
    from atelier.core.db import session_factory

    s = session_factory(db_url)()
    yield s
    s.rollback()
    s.close()
