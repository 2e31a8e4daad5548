from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from atelier.api.deps import SessionDep, SettingsDep, StoreDep, SubmitKey, invalid
from atelier.api.schemas import JobOut, errors
from atelier.api.submits import IdempotencyKey, checked_webhook_url, repeated, submit_errors
from atelier.training import service as training

router = APIRouter(
    prefix="/v1/training-jobs", tags=["training"], responses=errors(401, 403, 409, 413, 422, 429)
)


@router.post("", status_code=202, response_model=JobOut, responses=repeated(JobOut))
def submit_training_job(
    body: training.TrainingRequest,
    key: SubmitKey,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    checked_webhook_url(body.webhook_url, settings, "body", "webhook_url")
    try:
        with submit_errors():
            job, created = training.submit(
                session=session,
                store=store,
                settings=settings,
                request=body,
                key=key,
                idempotency_key=idempotency_key,
            )
    except training.NotAllowed as exc:
        raise HTTPException(403, detail=f"body.{exc.field}: {exc}") from exc
    except training.InvalidRequest as exc:
        raise invalid("body", exc.field, msg=str(exc)) from exc
    if not created:
        response.status_code = 200
    return JobOut.of(job, key)
