"""`atelier.reconcile` (on beat) and `atelier.dispatch`, on the control queue.

The database is the truth, Redis only carries messages. The reconciler repairs what a lost worker or
message left behind (atelier.core.units.reconcile): stale leases re-queued or failed, unsent or lost unit
messages sent again, finalize added for generation jobs whose chunks all ended. `dispatch` sends a
many-unit job's units, so that a submit sends one message whatever the job's size.
"""

from __future__ import annotations

import logging

from atelier.core import units
from atelier.core.config import get_settings
from atelier.core.db import session_scope
from atelier.core.queue import DISPATCH, RECONCILE
from atelier.workers.celery_app import task

log = logging.getLogger(__name__)


@task(RECONCILE)
def reconcile() -> dict[str, int]:
    return run_reconcile()


def run_reconcile() -> dict[str, int]:
    with session_scope() as session:
        counts = units.reconcile(session=session, settings=get_settings())
    if any(counts.values()):
        log.info("reconcile: %s", counts)
    return counts


@task(DISPATCH)
def dispatch(job_id: str) -> int:
    with session_scope() as session:
        return units.dispatch_units(session=session, job_id=job_id)
