"""Job services and schema against SQL (SQLite, and PostgreSQL when configured)."""

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from atelier.core import jobs
from atelier.core.db import get_engine
from atelier.core.models import Base, Job, ModelVersion, Schedule, ScheduleRun, utcnow


def test_migrations_and_models_agree(db_url):
    with get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def new_job(session, **kw) -> Job:
    job = jobs.create_job(session=session, kind="ingest", params={"image_ids": []}, **kw)
    session.commit()
    return job


def test_illegal_transition_raises_and_changes_nothing(session):
    job = new_job(session)
    with pytest.raises(jobs.IllegalTransition, match="queued to succeeded"):
        jobs.transition(session=session, job=job, to="succeeded")
    assert job.status == "queued"


def test_progress_eta_from_recent_rate(session):
    job = new_job(session, total=100)
    jobs.start(session=session, job_id=job.id, worker="w")
    session.refresh(job)
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
