from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from atelier.api.deps import AdminKey, ReadKey, SessionDep, SettingsDep, StoreDep, invalid
from atelier.api.schemas import errors
from atelier.api.submits import IdempotencyKey, checked_webhook_url, repeated
from atelier.core import idempotency
from atelier.core.models import Schedule, ScheduleRun
from atelier.training import schedules

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], responses=errors(401, 403, 404, 409, 413, 422))


class ScheduleIn(BaseModel):
    cron: str = Field(..., examples=["0 2 * * *"])
    enabled: bool = True
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="retrain parameters; `webhook_url` is notified when each retrain ends, signed with "
        "the webhook secret of the admin key that set it",
    )


class RunOut(BaseModel):
    run_key: str
    scheduled_for: datetime
    job_id: str | None
    outcome: str | None


class ScheduleOut(BaseModel):
    name: str
    cron: str
    enabled: bool
    params: dict[str, Any]
    next_run_at: datetime | None
    last_runs: list[RunOut] = []


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None = None


def _out(session, s: Schedule) -> ScheduleOut:  # noqa: ANN001
    runs = session.scalars(
        select(ScheduleRun)
        .where(ScheduleRun.schedule_name == s.name)
        .order_by(ScheduleRun.created_at.desc())
        .limit(5)
    )
    return ScheduleOut(
        name=s.name,
        cron=s.cron,
        enabled=s.enabled,
        params=s.params,
        next_run_at=s.next_run_at,
        last_runs=[
            RunOut(run_key=r.run_key, scheduled_for=r.scheduled_for, job_id=r.job_id, outcome=r.outcome)
            for r in runs
        ],
    )


@router.get("", response_model=SchedulePage)
def list_schedules(_: ReadKey, session: SessionDep):
    return SchedulePage(
        items=[_out(session, s) for s in session.scalars(select(Schedule).order_by(Schedule.name))]
    )


@router.put("/{name}", response_model=ScheduleOut)
def put_schedule(name: str, body: ScheduleIn, key: AdminKey, session: SessionDep, settings: SettingsDep):
    params = {k: v for k, v in body.params.items() if k != "webhook_key_id"}  # set here, never by a client
    if params.get("webhook_url") is not None:
        checked_webhook_url(params["webhook_url"], settings, "body", "params", "webhook_url")
        params["webhook_key_id"] = key.id
    try:
        schedule = schedules.put_schedule(
            session=session, name=name, cron=body.cron, enabled=body.enabled, params=params
        )
    except schedules.InvalidSchedule as exc:
        raise invalid("body", *exc.field.split("."), msg=str(exc)) from exc
    return _out(session, schedule)


@router.post("/{name}/run", response_model=RunOut, status_code=202, responses=repeated(RunOut))
def run_schedule(
    name: str,
    key: AdminKey,
    session: SessionDep,
    store: StoreDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    # the retrain's catalogue read and manifest PUT before the SQL transaction's first write (SQLite locks)
    frozen = schedules.prepare_retrain(session=session, store=store, name=name)
    schedule = session.get(Schedule, name)
    if schedule is None:
        raise HTTPException(404, detail=f"no schedule named {name!r}")
    # with an Idempotency-Key the run key is derived from it: a repeat finds the run it started
    scoped = idempotency.scoped(key.id, idempotency_key)
    run_key = (
        f"{name}:manual:{idempotency.request_hash(scoped)[:32]}" if scoped else schedules.manual_run_key(name)
    )
    run = session.get(ScheduleRun, run_key) if scoped else None
    if run is not None:
        response.status_code = 200
    else:
        run = schedules.fire(
            session=session,
            store=store,
            schedule=schedule,
            scheduled_for=schedules.utcnow(),
            run_key=run_key,
            frozen=frozen,
        )
    if run is None and scoped:  # a concurrent repeat started it
        run = session.get(ScheduleRun, run_key)
        response.status_code = 200
    if run is None:
        raise HTTPException(409, detail="a run with this key already exists; try again")
    return RunOut(
        run_key=run.run_key, scheduled_for=run.scheduled_for, job_id=run.job_id, outcome=run.outcome
    )
