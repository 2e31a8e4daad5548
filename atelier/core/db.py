"""SQL engine and sessions, one engine per process.

SQLite (the embedded default) runs in WAL mode with a busy timeout so that the API, several worker
processes and beat can write the same file; PostgreSQL is used as is. Forked worker processes must call
`dispose_engine()` first so that no connection is shared across a fork.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from atelier.core.config import get_settings

_engines: dict[str, Engine] = {}
_factories: dict[tuple[str, bool], sessionmaker[Session]] = {}
_pid = os.getpid()


def _pool_args(url: str) -> dict:
    """Pool sized to the API's thread pool, and a short wait for a connection (see Settings)."""
    if url.startswith("sqlite") and ":memory:" in url:
        return {}
    settings = get_settings()
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
    }


def make_engine(url: str, *, busy_timeout: float = 30.0, pool: dict | None = None) -> Engine:
    pool = _pool_args(url) if pool is None else pool
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout, "check_same_thread": False}, **pool
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that a write
        # transaction takes the lock at its start (BEGIN IMMEDIATE) instead of failing mid-way.
        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None

        # Read-only sessions (API GETs) ask for a deferred BEGIN so that pollers never queue
        # behind a writer: WAL readers see the last committed snapshot without any lock.
        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # noqa: ANN001
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=_network_args(url), **pool)


def _network_args(url: str) -> dict:
    """A database on another host: a connection whose host was cut off fails within
    ATELIER_DB_NETWORK_TIMEOUT_SECONDS (connect, and unacknowledged sends: TCP_USER_TIMEOUT) instead of
    hanging for the kernel's fifteen minutes, and the server ends a transaction left idle by a lost host
    after ATELIER_DB_IDLE_IN_TRANSACTION_SECONDS, so that its row locks do not stall the hosts that
    took over its work (docs/scaling.md)."""
    if not url.startswith("postgresql"):
        return {}
    settings = get_settings()
    args: dict = {}
    if settings.db_network_timeout_seconds:
        args["connect_timeout"] = max(1, int(settings.db_network_timeout_seconds))
        args["tcp_user_timeout"] = int(settings.db_network_timeout_seconds * 1000)
        args["keepalives"], args["keepalives_idle"] = 1, max(1, int(settings.db_network_timeout_seconds))
    if settings.db_idle_in_transaction_seconds:
        ms = int(settings.db_idle_in_transaction_seconds * 1000)
        args["options"] = f"-c idle_in_transaction_session_timeout={ms}"
    return args


def get_engine(url: str | None = None) -> Engine:
    global _pid
    if os.getpid() != _pid:  # forked: never reuse the parent's connections
        _engines.clear()
        _factories.clear()
        _pid = os.getpid()
    url = url or get_settings().database_url
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def event_loop_sessions(url: str | None = None) -> sessionmaker[Session] | None:
    """Read-only sessions for the API's event loop itself, or None where reads must go to a thread.

    SQLite only: one connection of its own (StaticPool; only the loop's thread uses it, so it never
    waits for a pool), DEFERRED reads that in WAL mode never wait for a writer, and a 0.2 s busy
    timeout for the rare lock they could meet (answered 503) instead of blocking the loop. This saves
    the thread hop per poll, which is what costs most when the CPU is contended. A PostgreSQL read is
    network I/O and stays on a thread.
    """
    global _pid
    if os.getpid() != _pid:
        _engines.clear()
        _factories.clear()
        _pid = os.getpid()
    url = url or get_settings().database_url
    if not url.startswith("sqlite") or ":memory:" in url:
        return None
    name = f"event-loop:{url}"
    if name not in _engines:
        _engines[name] = make_engine(url, busy_timeout=0.2, pool={"poolclass": StaticPool})
    return session_factory(name, readonly=True)


def dispose_engine() -> None:
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _factories.clear()


def session_factory(url: str | None = None, *, readonly: bool = False) -> sessionmaker[Session]:
    # One sessionmaker per (engine, mode), built once: an option engine per request copies the
    # engine's event dispatch and costs more than the read it serves.
    engine = get_engine(url)
    key = (url or get_settings().database_url, readonly)
    if key not in _factories:
        bind = engine.execution_options(sqlite_begin="DEFERRED") if readonly else engine
        _factories[key] = sessionmaker(bind=bind, expire_on_commit=False)
    return _factories[key]


@contextmanager
def session_scope(url: str | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url, readonly=readonly)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
