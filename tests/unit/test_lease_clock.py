"""Lease times come from the database's clock (atelier.core.dbclock), on SQLite and PostgreSQL: a worker
whose own clock is ten minutes off neither steals a live lease nor keeps a dead one, and the reconciler
on such a host judges leases by the database's time too."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from atelier.core import jobs, units
from atelier.core.config import get_settings
from atelier.core.dbclock import db_now, db_time
from atelier.core.models import WorkUnit

SKEW = timedelta(minutes=10)


@pytest.fixture
def settings(db_url, monkeypatch):
    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_STALE_AFTER_SECONDS", "30")
    monkeypatch.setenv("ATELIER_HEARTBEAT_SECONDS", "5")
    monkeypatch.setenv("ATELIER_RECONCILE_EVERY_SECONDS", "10")
    get_settings.cache_clear()
    monkeypatch.setattr("atelier.core.queue._background", None)
    monkeypatch.setattr("atelier.core.queue.send_task", lambda name, *, kwargs, queue: None)
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def skew(monkeypatch):
    """Set this process's clock (the `utcnow` every model and service reads) `delta` off the real one."""

    def set_skew(delta: timedelta) -> None:
        class Skewed(datetime):
            @classmethod
            def now(cls, tz=None):  # noqa: ANN001, ANN206
                return datetime.now(tz) + delta

        monkeypatch.setattr("atelier.core.models.base.datetime", Skewed)

    return set_skew


def running_unit(session, settings, worker: str) -> WorkUnit:
    job = jobs.create_job(session=session, kind="ingest", params={"image_ids": []})
    unit = units.start_work(session, job)
    session.commit()
    assert units.claim(session=session, unit_id=unit.id, worker=worker, settings=settings) is not None
    session.commit()
    return unit


def heartbeat_age(session, unit: WorkUnit) -> float:
    session.refresh(unit)
    return (db_time(session) - unit.heartbeat_at).total_seconds()


def age_by_db_clock(session, unit: WorkUnit, seconds: float) -> None:
    session.execute(update(WorkUnit).where(WorkUnit.id == unit.id).values(heartbeat_at=db_now(-seconds)))
    session.commit()


@pytest.mark.parametrize("sign", [1, -1], ids=["ahead", "behind"])
def test_a_skewed_worker_does_not_steal_a_live_lease(session, settings, skew, sign):
    unit = running_unit(session, settings, "host-a:1:live")
    assert units.heartbeat(session=session, unit_id=unit.id, worker="host-a:1:live") is False
    session.commit()
    skew(sign * SKEW)  # the second worker's clock: ten minutes ahead (or behind) the database's
    assert units.claim(session=session, unit_id=unit.id, worker="host-b:2:thief", settings=settings) is None
    counts = units.reconcile(session=session, settings=settings)
    session.commit()
    session.refresh(unit)
    assert counts["suspected"] == 0 and unit.status == "running" and unit.worker == "host-a:1:live"


@pytest.mark.parametrize("sign", [1, -1], ids=["ahead", "behind"])
def test_a_skewed_worker_keeps_no_dead_lease(session, settings, skew, sign):
    skew(sign * SKEW)  # the worker that will die beats with a clock ten minutes off
    unit = running_unit(session, settings, "host-a:1:dying")
    assert units.heartbeat(session=session, unit_id=unit.id, worker="host-a:1:dying") is False
    session.commit()
    # its heartbeat is stamped with the database's time, not its own
    assert abs(heartbeat_age(session, unit)) < 60
    age_by_db_clock(session, unit, 45)  # then it dies: 45 s without a beat, by the database's clock
    # the reconciler suspected it a pass ago (a claim takes a running unit only after that step)
    session.execute(update(WorkUnit).where(WorkUnit.id == unit.id).values(suspected_at=db_now(-30)))
    session.commit()
    skew(-sign * SKEW)  # and the worker that takes over is off the other way
    taken = units.claim(session=session, unit_id=unit.id, worker="host-b:2:next", settings=settings)
    session.commit()
    assert taken is not None and taken.worker == "host-b:2:next" and taken.deliveries == 2
    # the dead worker's late write is fenced
    assert units.heartbeat(session=session, unit_id=unit.id, worker="host-a:1:dying") is True


def test_a_skewed_reconciler_requeues_only_the_dead(session, settings, skew):
    live = running_unit(session, settings, "host-a:1:live")
    dead = running_unit(session, settings, "host-b:2:dead")
    age_by_db_clock(session, dead, 120)
    skew(-SKEW)  # a control host whose clock is behind would never see the dead lease as stale
    assert units.reconcile(session=session, settings=settings)["suspected"] == 1
    session.commit()
    session.execute(
        update(WorkUnit).where(WorkUnit.id == dead.id).values(suspected_at=db_now(-30))
    )  # a pass later, still no beat
    session.commit()
    skew(SKEW)  # nor one ahead see the live lease as stale
    counts = units.reconcile(session=session, settings=settings)
    session.commit()
    session.refresh(live)
    session.refresh(dead)
    assert counts["requeued"] == 1 and dead.status == "queued"
    assert live.status == "running" and live.worker == "host-a:1:live"


def test_a_lease_names_its_host_and_a_token():
    from atelier.workers.leases import worker_identity

    host, pid, token = worker_identity().rsplit(":", 2)
    import os
    import socket

    assert host == socket.gethostname() and pid == str(os.getpid()) and len(token) >= 8
    assert worker_identity() == worker_identity()  # one identity per process


def test_the_database_clock_is_utc(session):
    assert abs((db_time(session) - datetime.now(UTC)).total_seconds()) < 60
    assert (db_time(session, 30) - db_time(session)).total_seconds() == pytest.approx(30, abs=5)
