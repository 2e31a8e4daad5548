from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, StoreDep, SubmitKey, invalid
from api.schemas import JobOut
from core import training, units

router = APIRouter(prefix="/v1/training-jobs", tags=["training"])


@router.post("", status_code=202, response_model=JobOut)
def submit_training_job(body: training.TrainingRequest, key: SubmitKey, session: SessionDep, store: StoreDep):
    try:
        job = training.submit_training(session=session, store=store, request=body, api_key_id=key.id)
    except training.InvalidRequest as exc:
        raise invalid("body", exc.field, msg=str(exc)) from exc
    units.start_work(session, job)
    return JobOut.of(job)
