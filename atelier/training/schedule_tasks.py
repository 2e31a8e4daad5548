"""`atelier.fire_schedules`, on beat: start every due schedule once per scheduled time."""

from __future__ import annotations

import logging

from atelier.core.db import session_scope
from atelier.core.models import Schedule, utcnow
from atelier.core.queue import FIRE_SCHEDULES
from atelier.core.storage import get_store
from atelier.training import schedules
from atelier.workers.celery_app import task

log = logging.getLogger(__name__)


@task(FIRE_SCHEDULES)
def fire_schedules() -> list[str]:
    return run_fire_schedules()


def run_fire_schedules() -> list[str]:
    """Each due schedule in a write transaction of its own, whose catalogue read and manifest PUT came
    before it (schedules.prepare_retrain): the nightly retrain holds SQLite's write lock for a few
    short statements, not for a full catalogue read and an S3 PUT."""
    fired = []
    now = utcnow()
    store = get_store()
    with session_scope(readonly=True) as reading:
        due = [(s.name, s.next_run_at) for s in schedules.due(session=reading, now=now)]
    for name, scheduled_for in due:
        with session_scope() as session:
            frozen = schedules.prepare_retrain(session=session, store=store, name=name)
            schedule = session.get(Schedule, name)
            if schedule is None or not schedule.enabled or schedule.next_run_at != scheduled_for:
                continue  # changed since it was read: the next tick sees it as it is now
            run = schedules.fire(
                session=session,
                store=store,
                schedule=schedule,
                scheduled_for=scheduled_for,
                run_key=schedules.run_key_for(schedule.name, scheduled_for),
                frozen=frozen,
            )
            if run is not None:
                log.info("schedule %s: %s", run.run_key, run.outcome)
                fired.append(run.run_key)
    return fired
