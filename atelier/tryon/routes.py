"""Try-on previews over HTTP: one generated garment composited onto a drawn body template.

GET /v1/jobs/{id}/images/{index}/tryon?template=regular-m   image/png with its own provenance

A 2D composite rendered on request by atelier.tryon.renderer (Pillow and numpy, no torch), nothing stored; or,
when the job's `tryon` post-process op stored a preview for that template, that very file.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import select

from atelier.api.deps import ReadKey, SessionDep, StoreDep, invalid
from atelier.api.routes.jobs import get_job_or_404
from atelier.api.schemas import errors
from atelier.core.models import GeneratedImage
from atelier.tryon import renderer as tryon

router = APIRouter(tags=["try-on"], responses=errors(401, 403, 413, 422))


@router.get(
    "/v1/jobs/{job_id}/images/{index}/tryon",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}} | errors(404),
)
def tryon_preview(
    job_id: str,
    index: int,
    key: ReadKey,
    session: SessionDep,
    store: StoreDep,
    template: str | None = Query(
        None,
        description=f"one of {', '.join(tryon.template_names())}; default: the stored preview's, else "
        f"{tryon.DEFAULT_TEMPLATE}",
    ),
):
    if template is not None and template not in tryon.template_names():
        raise invalid(
            "query",
            "template",
            msg=f"unknown template {template!r}; one of {', '.join(tryon.template_names())}",
        )
    job = get_job_or_404(session, job_id, key=key)
    if job.kind != "generate":
        raise HTTPException(404, detail=f"job {job_id} is a {job.kind} job, not a generation job")
    image = session.scalars(
        select(GeneratedImage).where(GeneratedImage.job_id == job_id, GeneratedImage.index == index)
    ).first()
    if image is None:
        raise HTTPException(404, detail=f"job {job_id} has no image {index} (yet)")
    stored = tryon.template_of((job.params or {}).get("postprocess") or [])
    # what follows is S3 and rendering: hand the connection back first (the rows' values stay loaded)
    session.expunge(image)
    session.close()
    template = template or stored or tryon.DEFAULT_TEMPLATE
    filename = f"{job_id}-{index}-tryon-{template}.png"
    headers = {"Content-Disposition": f'inline; filename="{filename}"'}
    if image.tryon_key and template == stored:
        return Response(store.get(image.tryon_key), media_type="image/png", headers=headers)
    try:
        tryon.region_for(image.category)
    except tryon.UnknownCategory as exc:
        raise invalid("path", "index", msg=str(exc)) from exc
    try:
        data = tryon.preview(
            store.get(image.key),
            category=image.category,
            template=template,
            provenance=tryon.generated_provenance(
                job_id=job_id,
                index=index,
                seed=image.seed,
                key=image.key,
                sha256=image.sha256,
                model_version=image.model_version_id,
            ),
        )
    except ValueError as exc:  # an image that is all backdrop: nothing to dress the body in
        raise invalid("path", "index", msg=str(exc)) from exc
    return Response(data, media_type="image/png", headers=headers)
