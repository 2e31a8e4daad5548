"""Gallery pages for making designs.

GET  /ui/generate   the form: model, counts per category, seed, format, size, post-processing
POST /ui/generate   submit (also "variations of this" from an image page) -> the job page
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from atelier.api.deps import SessionDep, SettingsDep
from atelier.api.ui.render import render
from atelier.api.ui.session import Csrf, UiSubmit
from atelier.generation import routes as generation_routes
from atelier.generation.schemas import GenerationRequest
from atelier.training import model_routes

router = APIRouter(prefix="/ui", include_in_schema=False)
POSTPROCESS = ("upscale", "background")


@router.get("/generate")
def generate_form(request: Request, key: UiSubmit, session: SessionDep, model: str | None = None):
    return _form(request, key, session, values={"model": model or "production"})


def _form(request: Request, key, session, *, values: dict, error: str | None = None, status_code=200):  # noqa: ANN001, ANN202
    versions = model_routes.newest_models(key, session)
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
    # the submit reads and writes SQL: on a worker thread, never on the event loop that serves everyone
    return await run_in_threadpool(_submit, request, key, session, settings, form)


def _submit(request: Request, key, session, settings, form: dict[str, Any]):  # noqa: ANN001, ANN202
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
