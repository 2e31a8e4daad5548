"""Gallery pages for looking after models and their retraining.

GET  /ui/models, /ui/models/{id}  metrics side by side; sample grid, loss curves, lineage
POST /ui/models/{id}/promote      admins only
GET  /ui/schedules                next and last runs
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse

from atelier.api.deps import SessionDep, StoreDep
from atelier.api.ui.render import render
from atelier.api.ui.session import Csrf, UiAdmin, UiRead
from atelier.training import model_routes, registry, schedule_routes

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/models")
def models_page(request: Request, key: UiRead, session: SessionDep):
    return render(request, "models.html", key, versions=model_routes.newest_models(key, session))


@router.get("/models/{model_id}")
def model_page(request: Request, model_id: str, key: UiRead, session: SessionDep, store: StoreDep):
    version = model_routes.get_model(model_id=model_id, _=key, session=session, store=store)
    return render(request, "model.html", key, model=version)


@router.post("/models/{model_id}/promote")
def promote(model_id: str, key: UiAdmin, _: Csrf, session: SessionDep) -> RedirectResponse:
    try:
        model_routes.promote_model(model_id=model_id, key=key, session=session)
    except registry.ModelNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return RedirectResponse(f"/ui/models/{model_id}", status_code=303)


@router.get("/schedules")
def schedules_page(request: Request, key: UiRead, session: SessionDep):
    return render(
        request, "schedules.html", key, schedules=schedule_routes.list_schedules(_=key, session=session).items
    )
