"""`atelier.fire_schedules`, on beat: start every due schedule once per scheduled time."""

from __future__ import annotations

import logging

from atelier.core.db import session_scope
from atelier.core.models import utcnow
from atelier.core.queue import FIRE_SCHEDULES
from atelier.core.storage import get_store
from atelier.training import schedules
from atelier.workers.celery_app import task

log = logging.getLogger(__name__)


@task(FIRE_SCHEDULES)
def fire_schedules() -> list[str]:
    return run_fire_schedules()


def run_fire_schedules() -> list[str]:
    fired = []
    now = utcnow()
    with session_scope() as session:
        for schedule in schedules.due(session=session, now=now):
            scheduled_for = schedule.next_run_at
            run = schedules.fire(
                session=session,
                store=get_store(),
                schedule=schedule,
                scheduled_for=scheduled_for,
                run_key=schedules.run_key_for(schedule.name, scheduled_for),
            )
            if run is not None:
                log.info("schedule %s: %s", run.run_key, run.outcome)
                fired.append(run.run_key)
    return fired
