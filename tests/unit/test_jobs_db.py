"""Job services, schema and reconciler against SQL (SQLite, and PostgreSQL when configured)."""

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from core import jobs
from core.db import get_engine
from core.models import Base, Job, JobEvent, ModelVersion, Schedule, ScheduleRun, utcnow


def test_migrations_and_models_agree(db_url):
    with get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def new_job(session, **kw) -> Job:
    job = jobs.create_job(session=session, kind="ingest", params={"image_ids": []}, **kw)
    session.commit()
    return job


def test_one_claim_wins(session):
    job = new_job(session)
    first = jobs.claim(session=session, job_id=job.id, worker="w1", stale_after=30)
    session.commit()
    second = jobs.claim(session=session, job_id=job.id, worker="w2", stale_after=30)
    assert first is not None and first.status == "running" and first.worker == "w1"
    assert second is None
    assert jobs.claim(session=session, job_id="nope", worker="w2", stale_after=30) is None


def test_stale_lease_is_claimed_again_and_counted(session):
    job = new_job(session)
    jobs.claim(session=session, job_id=job.id, worker="w1", stale_after=30)
    job.heartbeat_at = utcnow() - timedelta(seconds=60)
    session.commit()
    again = jobs.claim(session=session, job_id=job.id, worker="w2", stale_after=30)
    session.commit()
    assert again is not None and again.worker == "w2" and again.deliveries == 2
    messages = [e.message for e in session.query(JobEvent).filter_by(job_id=job.id).order_by(JobEvent.id)]
    assert messages[0] == "ingest job queued" and "re-delivered (delivery 2)" in messages[-1]


def test_heartbeat_reports_cancel_and_lost_lease(session):
    job = new_job(session)
    jobs.claim(session=session, job_id=job.id, worker="w1", stale_after=30)
    session.commit()
    assert jobs.heartbeat(session=session, job_id=job.id, worker="w1") is False
    jobs.request_cancel(session=session, job=job)
    session.commit()
    assert jobs.heartbeat(session=session, job_id=job.id, worker="w1") is True
    assert jobs.heartbeat(session=session, job_id=job.id, worker="someone-else") is True


def test_cancel_queued_ends_it_and_cancel_twice_is_refused(session):
    job = new_job(session)
    jobs.request_cancel(session=session, job=job)
    session.commit()
    assert job.status == "cancelled" and job.finished_at is not None
    with pytest.raises(jobs.IllegalTransition):
        jobs.request_cancel(session=session, job=job)
    assert jobs.claim(session=session, job_id=job.id, worker="w", stale_after=30) is None


def test_illegal_transition_raises_and_changes_nothing(session):
    job = new_job(session)
    with pytest.raises(jobs.IllegalTransition, match="queued to succeeded"):
        jobs.transition(session=session, job=job, to="succeeded")
    assert job.status == "queued"


def test_progress_eta_from_recent_rate(session):
    job = new_job(session, total=100)
    jobs.claim(session=session, job_id=job.id, worker="w", stale_after=30)
    t0 = utcnow()
    jobs.set_progress(session=session, job=job, done=10, now=t0)
    assert job.eta_seconds is None  # no rate yet
    jobs.set_progress(session=session, job=job, done=30, now=t0 + timedelta(seconds=2))  # 10/s
    assert job.progress_done == 30 and job.eta_seconds == pytest.approx(7.0)


def test_only_one_production_model_in_sql(session):
    def version(prod: bool) -> ModelVersion:
        return ModelVersion(
            arch="atelier",
            preset="tiny",
            resolution=32,
            class_names=["a"],
            checkpoint_key="k",
            is_production=prod,
        )

    session.add_all([version(True), version(False), version(False)])
    session.commit()
    session.add(version(True))
    with pytest.raises(IntegrityError):
        session.commit()


def test_schedule_run_key_is_unique(session):
    session.add(Schedule(name="nightly-retrain", cron="0 2 * * *"))
    session.commit()
    at = utcnow().replace(microsecond=0)
    session.add(
        ScheduleRun(
            run_key="nightly-retrain:2026-11-27T02:00", schedule_name="nightly-retrain", scheduled_for=at
        )
    )
    session.commit()
    session.add(
        ScheduleRun(
            run_key="nightly-retrain:2026-11-27T02:00", schedule_name="nightly-retrain", scheduled_for=at
        )
    )
    with pytest.raises(IntegrityError):
        session.commit()


def test_idempotency_key_is_unique(session):
    new_job(session, idempotency_key="abc")
    with pytest.raises(IntegrityError):
        new_job(session, idempotency_key="abc")


@pytest.fixture
def sent(monkeypatch):
    """Records the messages the reconciler sends (the broker itself is covered by integration tests)."""
    calls = []
    monkeypatch.setattr(
        "core.queue.send_task", lambda name, *, kwargs, queue: calls.append((name, kwargs, queue))
    )
    return calls


@pytest.fixture
def reconcile_env(db_url, monkeypatch):
    from core.config import get_settings

    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    monkeypatch.setenv("ATELIER_STALE_AFTER_SECONDS", "30")
    monkeypatch.setenv("ATELIER_MAX_DELIVERIES", "3")
    monkeypatch.setenv("ATELIER_RESEND_AFTER_SECONDS", "120")  # the stack fixture may have set its own
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_reconciler_requeues_a_dead_workers_job_and_resends_it(session, reconcile_env, sent):
    from workers.tasks.reconcile import run_reconcile

    job = new_job(session)
    jobs.claim(session=session, job_id=job.id, worker="dead", stale_after=30)
    job.heartbeat_at = utcnow() - timedelta(seconds=120)
    session.commit()
    counts = run_reconcile()
    session.expire_all()
    assert counts["requeued"] == 1
    assert session.get(Job, job.id).status == "queued"
    assert sent == [("atelier.ingest", {"job_id": job.id}, "io")]


def test_reconciler_fails_a_job_that_keeps_killing_workers(session, reconcile_env, sent):
    from workers.tasks.reconcile import run_reconcile

    job = new_job(session)
    jobs.claim(session=session, job_id=job.id, worker="dead", stale_after=30)
    job.deliveries = 3
    job.heartbeat_at = utcnow() - timedelta(seconds=120)
    session.commit()
    assert run_reconcile()["failed"] == 1
    session.expire_all()
    failed = session.get(Job, job.id)
    assert failed.status == "failed" and "worker lost 3 times" in failed.error
    assert sent == []


def test_reconciler_resends_a_queued_job_whose_message_was_lost(session, reconcile_env, sent):
    from workers.tasks.reconcile import run_reconcile

    job = new_job(session)  # created but never dispatched, as if the send failed
    fresh = new_job(session)
    fresh.dispatched_at = utcnow()
    session.commit()
    assert run_reconcile()["resent"] == 1
    assert sent == [("atelier.ingest", {"job_id": job.id}, "io")]


def test_a_released_job_waiting_for_its_next_segment_is_not_presumed_lost(session, reconcile_env, sent):
    from workers.tasks.reconcile import run_reconcile

    job = new_job(session)
    jobs.claim(session=session, job_id=job.id, worker="w1", stale_after=30)
    jobs.release_lease(session=session, job=job)
    job.heartbeat_at = utcnow() - timedelta(seconds=60)  # queued behind other work for a minute
    session.commit()
    assert run_reconcile()["requeued"] == 0 and sent == []
    job.heartbeat_at = utcnow() - timedelta(seconds=600)  # its message is surely lost now
    session.commit()
    assert run_reconcile()["requeued"] == 1
    assert sent == [("atelier.ingest", {"job_id": job.id}, "io")]
