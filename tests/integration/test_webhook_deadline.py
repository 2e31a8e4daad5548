"""A webhook receiver that drips its headers, against the real delivery path: a webhook unit of an ended
job, leased from real SQL like a worker leases it, one attempt through atelier.webhooks.tasks. The attempt
ends at ATELIER_WEBHOOK_TIMEOUT_SECONDS while the headers are still coming, and is recorded like any other
retryable failure: a webhook_failed event naming `timed_out`, the unit back in line with a backoff."""

from __future__ import annotations

import time

import pytest

from tests.receivers import header_drip

pytestmark = pytest.mark.integration

DEADLINE = 1.0


def test_a_receiver_that_drips_headers_is_a_retryable_timed_out_attempt(bare_stack_db, monkeypatch):
    from sqlalchemy import select

    from atelier.core import auth, jobs, units
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine, session_scope
    from atelier.core.models import JobEvent, WorkUnit
    from atelier.webhooks.tasks import run_webhook
    from atelier.workers.leases import lease_unit

    for name, value in bare_stack_db.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ATELIER_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("ATELIER_WEBHOOK_TIMEOUT_SECONDS", str(DEADLINE))
    get_settings.cache_clear()
    dispose_engine()
    try:
        with header_drip() as (port, sent):
            with session_scope() as session:
                key, _ = auth.create_key(session=session, name="hooked", scopes=["submit"])
                job = jobs.create_job(
                    session=session,
                    kind="generate",
                    params={"webhook_url": f"http://127.0.0.1:{port}/hook"},
                    api_key_id=key.id,
                )
                job.status = jobs.SUCCEEDED
                unit = units.add_unit(session=session, job=job, kind="webhook", send=False)
                job_id, unit_id = job.id, unit.id
            began = time.monotonic()
            with lease_unit(unit_id) as lease:
                assert lease is not None
                result = run_webhook(lease)
            took = time.monotonic() - began
            assert sent  # it gave up while the headers were being dripped
        assert result == "retrying"
        assert took < DEADLINE + 5, f"{took:.1f} s"  # the receiver would have dripped for 10 s
        with session_scope(readonly=True) as session:
            unit = session.get(WorkUnit, unit_id)
            assert (unit.status, unit.attempts, unit.error) == (units.QUEUED, 1, "webhook: timed_out")
            assert unit.not_before is not None  # back in line after a backoff, like other failures
            events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
            failed = [e for e in events if e.kind == "webhook_failed"]
            assert len(failed) == 1 and failed[0].data["category"] == "timed_out"
            assert failed[0].data["retry"] is True and "/hook" not in failed[0].message
    finally:
        get_settings.cache_clear()
        dispose_engine()
