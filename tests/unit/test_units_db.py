"""The leased-work core (atelier.core.units) against SQL (SQLite, and PostgreSQL when configured): claims,
fenced heartbeats, give-back without using deliveries, the reconciler's suspicion before re-queueing,
the finalize and webhook units, and cancel racing completion."""

from datetime import timedelta

import pytest

from atelier.core import jobs, units
from atelier.core.config import get_settings
from atelier.core.models import Job, JobEvent, WorkUnit, utcnow


@pytest.fixture
def sent(monkeypatch):
    """Records the messages sent (the broker itself is covered by integration tests)."""
    calls = []
    monkeypatch.setattr("atelier.core.queue._background", None)  # send in the committing thread
    monkeypatch.setattr(
        "atelier.core.queue.send_task", lambda name, *, kwargs, queue: calls.append((name, kwargs, queue))
    )
    return calls


@pytest.fixture
def settings(db_url, monkeypatch):
    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_STALE_AFTER_SECONDS", "30")
    monkeypatch.setenv("ATELIER_HEARTBEAT_SECONDS", "5")
    monkeypatch.setenv("ATELIER_RECONCILE_EVERY_SECONDS", "10")
    monkeypatch.setenv("ATELIER_MAX_DELIVERIES", "3")
    monkeypatch.setenv("ATELIER_RESEND_AFTER_SECONDS", "120")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def ingest_job(session) -> tuple[Job, WorkUnit]:
    job = jobs.create_job(session=session, kind="ingest", params={"image_ids": []})
    unit = units.start_work(session, job)
    session.commit()
    return job, unit


def age(session, unit: WorkUnit, seconds: float) -> None:
    unit.heartbeat_at = utcnow() - timedelta(seconds=seconds)
    session.commit()


def test_one_claim_wins_and_the_job_starts_once(session, settings, sent):
    job, unit = ingest_job(session)
    assert sent == [("atelier.ingest", {"unit_id": unit.id}, "io")]
    first = units.claim(session=session, unit_id=unit.id, worker="w1", settings=settings)
    session.commit()
    second = units.claim(session=session, unit_id=unit.id, worker="w2", settings=settings)
    assert first is not None and first.worker == "w1" and first.job_id == job.id
    assert second is None
    assert units.claim(session=session, unit_id=10**9, worker="w2", settings=settings) is None
    session.refresh(job)
    assert job.status == "running" and job.started_at is not None


def test_a_stale_lease_is_claimed_again_and_counted(session, settings, sent):
    job, unit = ingest_job(session)
    units.claim(session=session, unit_id=unit.id, worker="w1", settings=settings)
    session.commit()
    age(session, unit, 60)
    # stale but not yet suspected: a duplicate delivery does not take a unit that may still be alive
    assert units.claim(session=session, unit_id=unit.id, worker="w2", settings=settings) is None
    session.commit()
    unit.suspected_at = utcnow() - timedelta(seconds=5)  # suspected, but not a pass ago yet
    session.commit()
    assert units.claim(session=session, unit_id=unit.id, worker="w2", settings=settings) is None
    session.commit()
    unit.suspected_at = utcnow() - timedelta(seconds=60)  # and still silent a pass later
    session.commit()
    again = units.claim(session=session, unit_id=unit.id, worker="w2", settings=settings)
    session.commit()
    assert again is not None and again.worker == "w2" and again.deliveries == 2
    messages = [e.message for e in session.query(JobEvent).filter_by(job_id=job.id).order_by(JobEvent.id)]
    assert "re-delivered (delivery 2) on w2" in messages[-1]
    session.refresh(job)
    assert job.deliveries == 2


def test_heartbeat_is_fenced_and_reports_cancel(session, settings, sent):
    job, unit = ingest_job(session)
    units.claim(session=session, unit_id=unit.id, worker="w1", settings=settings)
    session.commit()
    assert units.heartbeat(session=session, unit_id=unit.id, worker="w1") is False
    assert units.heartbeat(session=session, unit_id=unit.id, worker="someone-else") is True
    assert units.finish(session=session, unit_id=unit.id, worker="someone-else", status="succeeded") is None
    units.cancel_job(session=session, job=session.get(Job, job.id))
    session.commit()
    assert units.heartbeat(session=session, unit_id=unit.id, worker="w1") is True
    units.finish(session=session, unit_id=unit.id, worker="w1", status=units.CANCELLED)
    session.commit()
    session.refresh(job)
    assert job.status == "cancelled"


def test_cancel_of_a_queued_job_ends_it_and_its_units(session, settings, sent):
    job, unit = ingest_job(session)
    units.cancel_job(session=session, job=job)
    session.commit()
    session.refresh(unit)
    assert job.status == "cancelled" and unit.status == "cancelled"
    with pytest.raises(jobs.IllegalTransition):
        units.cancel_job(session=session, job=job)
    assert units.claim(session=session, unit_id=unit.id, worker="w", settings=settings) is None


def test_give_back_keeps_the_delivery_budget_and_waits_out_its_backoff(session, settings, sent):
    job, unit = ingest_job(session)
    for _ in range(5):  # far more infrastructure faults than max_deliveries (3)
        claimed = units.claim(session=session, unit_id=unit.id, worker="w", settings=settings)
        assert claimed is not None, "an infrastructure fault must not use up the deliveries"
        units.give_back(
            session=session, unit_id=unit.id, worker="w", reason="S3 down", settings=settings, delay=60
        )
        session.commit()
        session.refresh(unit)
        assert unit.status == "queued" and unit.deliveries == 0 and unit.dispatched_at is None
        assert units.dispatch_units(session=session) == 0  # still backing off
        unit.not_before = utcnow() - timedelta(seconds=1)
        session.commit()
    assert unit.attempts == 5
    sent.clear()
    assert units.dispatch_units(session=session) == 1
    assert sent == [("atelier.ingest", {"unit_id": unit.id}, "io")]


def test_reconciler_suspects_first_then_requeues_a_dead_workers_unit(session, settings, sent):
    job, unit = ingest_job(session)
    units.claim(session=session, unit_id=unit.id, worker="dead", settings=settings)
    session.commit()
    age(session, unit, 120)
    sent.clear()
    counts = units.reconcile(session=session, settings=settings)
    session.commit()
    assert counts["suspected"] == 1 and counts["requeued"] == 0 and sent == []
    unit.suspected_at = utcnow() - timedelta(seconds=30)  # a pass later, still no heartbeat
    session.commit()
    counts = units.reconcile(session=session, settings=settings)
    session.commit()
    session.refresh(unit)
    assert counts["requeued"] == 1 and unit.status == "queued" and unit.worker is None
    assert sent == [("atelier.ingest", {"unit_id": unit.id}, "io")]
    session.refresh(job)
    assert job.status == "running"  # the job itself never goes back: its unit does


def test_a_heartbeat_after_an_outage_clears_the_suspicion(session, settings, sent):
    """A database outage delays every heartbeat at once: the first pass after it only suspects, and the
    live worker's next beat keeps its lease."""
    job, unit = ingest_job(session)
    units.claim(session=session, unit_id=unit.id, worker="alive", settings=settings)
    session.commit()
    age(session, unit, 45)
    units.reconcile(session=session, settings=settings)
    session.commit()
    assert units.heartbeat(session=session, unit_id=unit.id, worker="alive") is False
    session.commit()
    counts = units.reconcile(session=session, settings=settings)
    session.commit()
    session.refresh(unit)
    assert counts["requeued"] == 0 and unit.status == "running" and unit.worker == "alive"


def test_reconciler_fails_a_unit_that_keeps_killing_workers_and_its_job(session, settings, sent):
    job, unit = ingest_job(session)
    units.claim(session=session, unit_id=unit.id, worker="dead", settings=settings)
    unit.deliveries = 3
    unit.suspected_at = utcnow() - timedelta(seconds=60)
    session.commit()
    age(session, unit, 120)
    assert units.reconcile(session=session, settings=settings)["failed"] == 1
    session.commit()
    session.refresh(job)
    assert job.status == "failed" and "worker lost 3 times" in job.error


def test_reconciler_sends_a_unit_whose_message_was_never_sent(session, settings, sent):
    job = jobs.create_job(session=session, kind="ingest", params={"image_ids": []})
    unit = units.add_unit(session=session, job=job, kind="ingest", send=False)
    session.commit()
    assert sent == []
    assert (
        units.reconcile(session=session, settings=settings)["resent"] == 0
    )  # its dispatch may be on the way
    unit.created_at = utcnow() - timedelta(seconds=10)
    session.commit()
    assert units.reconcile(session=session, settings=settings)["resent"] == 1
    session.commit()
    assert sent == [("atelier.ingest", {"unit_id": unit.id}, "io")]


def test_a_unit_waiting_behind_a_busy_queue_is_not_presumed_lost(session, settings, sent):
    _, waiting = ingest_job(session)
    _, busy = ingest_job(session)
    units.claim(session=session, unit_id=busy.id, worker="w", settings=settings)  # io is consuming
    waiting.dispatched_at = utcnow() - timedelta(seconds=600)
    busy.dispatched_at = utcnow() - timedelta(seconds=900)  # sent before the waiting one
    session.commit()
    sent.clear()
    assert units.reconcile(session=session, settings=settings)["resent"] == 0 and sent == []
    busy.dispatched_at = utcnow() - timedelta(seconds=10)  # a later message was consumed: ours is gone
    session.commit()
    assert units.reconcile(session=session, settings=settings)["resent"] == 1


def generate_job(session, n_chunks: int, webhook: bool = False) -> Job:
    params = {"count": n_chunks, "archive": False}
    if webhook:
        params["webhook_url"] = "https://example.test/hook"
    job = jobs.create_job(session=session, kind="generate", params=params, total=n_chunks)
    for i in range(n_chunks):
        units.add_unit(
            session=session, job=job, kind="chunk", seq=i, spec={"start": i, "count": 1}, send=False
        )
    units.dispatch_new_job(session, job)
    session.commit()
    return job


def test_a_submit_sends_one_message_and_the_last_chunk_adds_one_finalize(session, settings, sent):
    job = generate_job(session, 3)
    assert sent == [("atelier.dispatch", {"job_id": job.id}, "control")]
    assert units.dispatch_units(session=session, job_id=job.id) == 3
    session.commit()
    chunk_ids = [u.id for u in session.query(WorkUnit).filter_by(job_id=job.id, kind="chunk")]
    for uid in chunk_ids:
        units.claim(session=session, unit_id=uid, worker="w", settings=settings)
    session.commit()
    for uid in chunk_ids:
        units.finish(session=session, unit_id=uid, worker="w", status="succeeded")
        session.commit()
    finals = session.query(WorkUnit).filter_by(job_id=job.id, kind="finalize").all()
    assert len(finals) == 1 and finals[0].status == "queued"
    assert units.maybe_finalize(session=session, job=job) is False  # never a second one


def test_a_failed_finalize_ends_the_job_failed_with_the_reason(session, settings, sent):
    job = generate_job(session, 1)
    chunk = session.query(WorkUnit).filter_by(job_id=job.id, kind="chunk").one()
    units.claim(session=session, unit_id=chunk.id, worker="w", settings=settings)
    units.finish(session=session, unit_id=chunk.id, worker="w", status="succeeded")
    session.commit()
    final = session.query(WorkUnit).filter_by(job_id=job.id, kind="finalize").one()
    units.claim(session=session, unit_id=final.id, worker="w", settings=settings)
    units.finish(session=session, unit_id=final.id, worker="w", status="failed", error="ValueError: bad sha")
    session.commit()
    session.refresh(job)
    assert job.status == "failed" and "finalize failed" in job.error and "bad sha" in job.error


def test_the_terminal_transition_puts_the_webhook_in_the_outbox(session, settings, sent):
    job = generate_job(session, 1, webhook=True)
    units.end_job(session=session, job=job, to="succeeded", result={})
    session.commit()
    hooks = session.query(WorkUnit).filter_by(job_id=job.id, kind="webhook").all()
    assert len(hooks) == 1 and hooks[0].queue == "io"
    assert ("atelier.deliver_webhook", {"unit_id": hooks[0].id}, "io") in sent


def test_a_job_left_without_work_is_repaired(session, settings, sent):
    job = generate_job(session, 1)
    chunk = session.query(WorkUnit).filter_by(job_id=job.id, kind="chunk").one()
    units.claim(session=session, unit_id=chunk.id, worker="w", settings=settings)
    chunk_id = chunk.id
    session.commit()
    # the chunk ended but the finalize was never added (as if that transaction was lost)
    session.query(WorkUnit).filter_by(id=chunk_id).update({"status": "succeeded"})
    session.commit()
    assert units.reconcile(session=session, settings=settings)["repaired"] == 1
    session.commit()
    assert session.query(WorkUnit).filter_by(job_id=job.id, kind="finalize").count() == 1


def test_cancel_while_chunks_run_still_finalizes_and_a_finished_job_ends_succeeded(session, settings, sent):
    job = generate_job(session, 2)
    a, b = session.query(WorkUnit).filter_by(job_id=job.id, kind="chunk").order_by(WorkUnit.seq).all()
    units.claim(session=session, unit_id=a.id, worker="w", settings=settings)
    units.claim(session=session, unit_id=b.id, worker="w", settings=settings)
    session.commit()
    units.cancel_job(session=session, job=session.get(Job, job.id))
    session.commit()
    assert units.heartbeat(session=session, unit_id=a.id, worker="w") is True  # stop at the next batch
    units.finish(session=session, unit_id=a.id, worker="w", status="succeeded")  # it had just finished
    units.finish(session=session, unit_id=b.id, worker="w", status="succeeded")
    session.commit()
    final = session.query(WorkUnit).filter_by(job_id=job.id, kind="finalize").one()
    claimed = units.claim(session=session, unit_id=final.id, worker="f", settings=settings)
    assert claimed is not None, "a cancel must not stop the finalize that records the outcome"
    assert units.heartbeat(session=session, unit_id=final.id, worker="f") is False


def test_cancel_and_claim_take_their_locks_in_the_same_order(db_url, session, settings, sent):
    """The cancel route locks the job row, then its units; a claim arriving meanwhile must wait on the
    job row before it locks its unit. In the opposite order PostgreSQL finds a deadlock and one of the
    two fails; here both finish: the claim finds the job cancelled."""
    import threading
    import time

    from atelier.core.db import session_factory

    job, unit = ingest_job(session)
    canceller = session_factory(db_url)()
    locked = canceller.get(Job, job.id, with_for_update=True)  # the cancel route's first step
    outcome: dict = {}

    def claimer() -> None:
        with session_factory(db_url)() as s:
            try:
                outcome["claim"] = units.claim(session=s, unit_id=unit.id, worker="w1", settings=settings)
                s.commit()
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

    thread = threading.Thread(target=claimer)
    thread.start()
    time.sleep(0.5)  # not an assertion: gives the claim time to reach its first lock
    try:
        units.cancel_job(session=canceller, job=locked)
        canceller.commit()
    finally:
        canceller.close()
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["claim"] is None
    session.expire_all()
    assert session.get(WorkUnit, unit.id).status == "cancelled"
    assert session.get(Job, job.id).status == "cancelled"
