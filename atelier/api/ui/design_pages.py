"""Gallery pages for making designs and looking after models.

GET  /ui/generate                 the form: model, counts per category, seed, format, size, post-processing
POST /ui/generate                 submit (also "variations of this" from an image page) -> the job page
GET  /ui/models, /ui/models/{id}  metrics side by side; sample grid, loss curves, lineage
POST /ui/models/{id}/promote      admins only
GET  /ui/schedules                next and last runs
GET  /ui/catalogue                counts per category and per day, drawn as bar charts
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from atelier.api.deps import SessionDep, SettingsDep, StoreDep
from atelier.api.ui import render
from atelier.api.ui.session import Csrf, UiAdmin, UiRead, UiSubmit
from atelier.catalogue import routes as catalogue_routes
from atelier.generation import routes as generation_routes
from atelier.generation.schemas import GenerationRequest
from atelier.training import model_routes, registry, schedule_routes

router = APIRouter(prefix="/ui", include_in_schema=False)
POSTPROCESS = ("upscale", "background")


def _models(key, session) -> list[model_routes.ModelOut]:  # noqa: ANN001
    return model_routes.list_models(_=key, session=session, limit=50, cursor=None).items


@router.get("/generate")
def generate_form(request: Request, key: UiSubmit, session: SessionDep, model: str | None = None):
    return _form(request, key, session, values={"model": model or "production"})


def _form(request: Request, key, session, *, values: dict, error: str | None = None, status_code=200):  # noqa: ANN001, ANN202
    versions = _models(key, session)
    chosen = next((v for v in versions if v.id == values.get("model")), None)
    chosen = (
        chosen or next((v for v in versions if v.production), None) or (versions[0] if versions else None)
    )
    return render(
        request,
        "generate.html",
        key,
        status_code=status_code,
        versions=versions,
        categories=chosen.class_names if chosen else [],
        values=values,
        error=error,
        postprocess=POSTPROCESS,
    )


def _request_body(form: dict[str, Any]) -> dict[str, Any]:
    """The form's fields as a /v1/generation-jobs body: blanks left out, per-category counts gathered."""
    body: dict[str, Any] = {"model": form.get("model") or "production"}
    per_category = {
        name.removeprefix("n_"): int(v)
        for name, v in form.items()
        if name.startswith("n_") and str(v).strip()
    }
    if form.get("mode") == "variations":
        body |= {"mode": "variations", "image_id": form.get("image_id"), "count": form.get("count") or 8}
        if form.get("strength"):
            body["strength"] = form["strength"]
    elif per_category:
        body["per_category"] = per_category
    for field in ("seed", "size", "quality", "truncation"):
        if str(form.get(field) or "").strip():
            body[field] = form[field]
    body["format"] = form.get("format") or "png"
    body["priority"] = form.get("priority") or None
    body["archive"] = form.get("archive") == "on"
    body["postprocess"] = [op for op in POSTPROCESS if form.get(f"pp_{op}") == "on"]
    if str(form.get("recolor") or "").strip():
        body["postprocess"].append({"op": "recolor", "color": form["recolor"]})
    return body


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


@router.post("/generate")
async def generate_submit(
    request: Request, key: UiSubmit, _: Csrf, session: SessionDep, settings: SettingsDep
):
    form = dict(await request.form())
    try:
        body = GenerationRequest.model_validate(_request_body(form))
    except (ValidationError, ValueError) as exc:
        msg = _describe(exc) if isinstance(exc, ValidationError) else f"counts must be whole numbers ({exc})"
        return _form(request, key, session, values=form, error=msg, status_code=422)
    try:
        # the form token makes a double-clicked submit one job, like the API's Idempotency-Key
        job = generation_routes.submit_generation(
            body=body,
            key=key,
            session=session,
            settings=settings,
            response=Response(),
            idempotency_key=form.get("idempotency") or str(uuid.uuid4()),
        )
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, str) else _detail_text(exc.detail)
        return _form(request, key, session, values=form, error=detail, status_code=exc.status_code)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail)


@router.get("/models")
def models_page(request: Request, key: UiRead, session: SessionDep):
    return render(request, "models.html", key, versions=_models(key, session))


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


@router.get("/catalogue")
def catalogue_page(request: Request, key: UiRead, session: SessionDep):
    stats = catalogue_routes.catalogue_stats(_=key, session=session, period="month")
    return render(
        request,
        "catalogue.html",
        key,
        stats=stats,
        by_category=_bars(stats.per_category),
        by_day=_bars(dict(list(stats.per_day.items())[-60:])),
    )


def _bars(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Rows for an SVG bar chart: label, count and width as a percentage of the largest."""
    top = max(counts.values(), default=0) or 1
    return [{"label": k, "n": n, "pct": round(100 * n / top, 1)} for k, n in counts.items()]
