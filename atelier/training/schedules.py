"""Cron schedules such as `nightly-retrain`, fired at most once per scheduled time.

    beat tick -> due schedules -> insert ScheduleRun(run_key="name:2026-11-27T02:00")  (unique in SQL)
                                   └─ the insert lost? another beat fired it: do nothing
                                   └─ won: decide (enough new photos?) and start the job, same commit

The retrain schedule fine-tunes the production model when the catalogue has at least
`min_new_images` photos that arrived after the production model's snapshot; the promotion gate of
the training job then decides whether the new version replaces production.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from croniter import croniter
from pydantic import BaseModel, Field, HttpUrl, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atelier.core import units
from atelier.core.config import get_settings
from atelier.core.models import DatasetSnapshot, Schedule, ScheduleRun, utcnow
from atelier.core.storage import ObjectStore
from atelier.training import registry, snapshots
from atelier.training import service as training


class RetrainParams(BaseModel):
    model_config = {"extra": "forbid"}

    kind: Literal["retrain"] = "retrain"
    min_new_images: int = Field(100, ge=0)
    preset: Literal["tiny", "small", "base", "large"] = "small"
    resolution: int | None = None
    steps: int = Field(10_000, ge=1, le=training.MAX_STEPS)
    arch: Literal["atelier", "dcgan"] = "atelier"
    categories: list[str] | None = None
    kid_tolerance: float = Field(0.0, ge=0.0)
    auto_promote: bool = True
    webhook_url: HttpUrl | None = Field(None, description="POSTed a signed job event when a retrain ends")
    # the admin key that set webhook_url: its signing secret signs the retrain's webhook (set by the API)
    webhook_key_id: str | None = None


class InvalidSchedule(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def next_after(cron: str, after: datetime) -> datetime:
    return croniter(cron, after).get_next(datetime)


def put_schedule(
    *, session: Session, name: str, cron: str, enabled: bool, params: dict[str, Any]
) -> Schedule:
    if not croniter.is_valid(cron):
        raise InvalidSchedule("cron", f"{cron!r} is not a cron expression (e.g. '0 2 * * *')")
    try:
        checked = RetrainParams(**params).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidSchedule(".".join(["params", *map(str, first["loc"])]), first["msg"]) from exc
    try:
        training.check_tolerance("kid_tolerance", checked["kid_tolerance"], get_settings())
    except training.InvalidRequest as exc:
        raise InvalidSchedule("params.kid_tolerance", str(exc)) from exc
    schedule = session.get(Schedule, name)
    if schedule is None:
        schedule = Schedule(name=name)
        session.add(schedule)
    schedule.cron, schedule.enabled, schedule.params = cron, enabled, checked
    schedule.next_run_at = next_after(cron, utcnow()) if enabled else None
    session.flush()
    return schedule


def due(*, session: Session, now: datetime) -> list[Schedule]:
    return list(
        session.scalars(
            select(Schedule)
            .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
            .order_by(Schedule.name)
        )
    )


def prepare_retrain(*, session: Session, store: ObjectStore, name: str) -> snapshots.Frozen | None:
    """The catalogue read and manifest PUT of schedule `name`'s next retrain, done before `fire` takes
    the write lock (snapshots.prepare); None when there is nothing to freeze (fire then says why)."""
    with snapshots.reader(session) as r:
        schedule = r.get(Schedule, name)
        params = dict(schedule.params) if schedule is not None else None
        r.rollback()
    if params is None:
        return None
    try:
        categories = RetrainParams(**params).categories
        return snapshots.prepare(session=session, store=store, categories=categories)
    except (ValueError, snapshots.EmptySelection):  # pydantic's ValidationError is a ValueError
        return None


def fire(
    *,
    session: Session,
    store: ObjectStore,
    schedule: Schedule,
    scheduled_for: datetime,
    run_key: str,
    frozen: snapshots.Frozen | None = None,
) -> ScheduleRun | None:
    """Start the run `run_key` unless it already exists. Returns the run, or None when another beat
    (or a repeated tick) fired it first. Commits. `frozen`: prepare_retrain's result, so that the
    catalogue read and the S3 PUT happened before this transaction."""
    run = ScheduleRun(run_key=run_key, schedule_name=schedule.name, scheduled_for=scheduled_for)
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        session.rollback()
        return None
    if run_key.startswith(f"{schedule.name}:") and ":manual:" not in run_key:
        schedule.next_run_at = next_after(schedule.cron, max(scheduled_for, utcnow()))
    run.outcome, run.job_id = _start_retrain(
        session=session, store=store, params=RetrainParams(**schedule.params), frozen=frozen
    )
    try:
        session.commit()
    except IntegrityError:  # PostgreSQL reports the duplicate run key at commit time
        session.rollback()
        return None
    return run


def _start_retrain(
    *, session: Session, store: ObjectStore, params: RetrainParams, frozen: snapshots.Frozen | None = None
) -> tuple[str, str | None]:
    current = registry.production(session=session)
    snapshot = session.get(DatasetSnapshot, current.dataset_snapshot_id) if current else None
    new = snapshots.images_added_since(session=session, snapshot=snapshot)
    if current is not None and new < params.min_new_images:
        return f"skipped: {new} new catalogue images, fewer than min_new_images={params.min_new_images}", None
    request = training.TrainingRequest(
        preset=current.preset if current else params.preset,
        resolution=current.resolution if current else params.resolution,
        steps=params.steps,
        categories=params.categories,
        base_model=current.id if current else None,
        arch=current.arch if current else params.arch,
        promote="if_better" if params.auto_promote else "never",
        kid_tolerance=params.kid_tolerance,
        webhook_url=params.webhook_url,
    )
    try:
        job = training.submit_training(
            session=session,
            store=store,
            request=request,
            extra={"retrain": True},
            # a retrain that notifies belongs to the admin key that asked for it, whose secret signs
            api_key_id=params.webhook_key_id if params.webhook_url else None,
            frozen=frozen,
        )
    except training.InvalidRequest as exc:
        return f"skipped: {exc}", None
    units.start_work(session, job)
    how = f"fine-tuning production {current.id}" if current else "training from scratch (no production model)"
    return f"started job {job.id}: {new} new images, {how}", job.id


def run_key_for(name: str, scheduled_for: datetime) -> str:
    return f"{name}:{scheduled_for.strftime('%Y-%m-%dT%H:%M')}"


def manual_run_key(name: str) -> str:
    return f"{name}:manual:{utcnow().strftime('%Y-%m-%dT%H:%M:%S.%f')}"


NIGHTLY = "nightly-retrain"


def ensure_defaults(*, session: Session) -> None:
    """A fresh installation retrains nightly at 02:00 UTC once 100 new photos have arrived."""
    if session.get(Schedule, NIGHTLY) is None:
        put_schedule(session=session, name=NIGHTLY, cron="0 2 * * *", enabled=True, params={})
