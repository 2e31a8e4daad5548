from __future__ import annotations

from fastapi import APIRouter

from atelier.api.deps import SessionDep, SettingsDep, StoreDep, SubmitKey, invalid, too_many
from atelier.api.schemas import JobOut, errors
from atelier.core import quotas, units
from atelier.training import service as training

router = APIRouter(prefix="/v1/training-jobs", tags=["training"], responses=errors(401, 403, 413, 422, 429))


@router.post("", status_code=202, response_model=JobOut)
def submit_training_job(
    body: training.TrainingRequest,
    key: SubmitKey,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
):
    try:
        quotas.check_submit(session=session, key=key, settings=settings)
    except quotas.QuotaExceeded as exc:
        raise too_many(str(exc), exc.retry_after) from exc
    try:
        job = training.submit_training(session=session, store=store, request=body, api_key_id=key.id)
    except training.InvalidRequest as exc:
        raise invalid("body", exc.field, msg=str(exc)) from exc
    units.start_work(session, job)
    return JobOut.of(job, key)
