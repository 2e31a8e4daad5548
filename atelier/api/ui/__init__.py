"""The gallery at /ui: server-rendered pages over the same services as the HTTP API.

    api/ui/session.py        sign-in with an API key -> signed HttpOnly cookie; CSRF tokens for forms
    api/ui/jobs_pages.py     jobs (live progress over the event stream), events, cancel, images, thumbnails
    api/ui/design_pages.py   the generation form and "variations of this", models, schedules, catalogue
    atelier/trends/pages.py    trend reports: the list, a report's figures and charts, the request form
    api/ui/thumbs.py         thumbnails made on first view and kept in S3
    api/ui/templates/        Jinja2 templates;  api/ui/static/  CSS and a little JavaScript, no build step

Pages call the /v1 route functions themselves wherever one exists, so the gallery shows exactly what
the API answers, with the same checks and the same errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from atelier.api.ui.session import csrf_token

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def render(request: Request, name: str, key: Any = None, status_code: int = 200, **context: Any):  # noqa: ANN201
    context |= {"key": key, "csrf": csrf_token(request), "is_admin": bool(key and "admin" in key.scopes)}
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    # Pages show what a signed-in key may see: never from a shared cache, never framed by another site.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data: http: https:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    return response


def mount(app: FastAPI) -> None:
    from atelier.api.ui import design_pages, jobs_pages
    from atelier.trends import pages as trend_pages

    app.include_router(jobs_pages.router)
    app.include_router(design_pages.router)
    app.include_router(trend_pages.router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
