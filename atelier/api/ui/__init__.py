"""The gallery at /ui: server-rendered pages over the same services as the HTTP API.

    api/ui/render.py         templates and the headers every page carries
    api/ui/session.py        sign-in with an API key -> signed HttpOnly cookie; CSRF tokens for forms
    api/ui/jobs_pages.py     jobs (live progress over the event stream), events, cancel, images, thumbnails
    api/ui/thumbs.py         thumbnails made on first view and kept in S3
    api/ui/templates/        Jinja2 templates;  api/ui/static/  CSS and a little JavaScript, no build step
    generation/pages.py      the generation form and "variations of this"
    training/pages.py        models (metrics, samples, lineage, promote) and schedules
    catalogue/pages.py       counts per category and per day
    trends/pages.py          trend reports: the list, a report's figures and charts, the request form

Pages call the /v1 route functions themselves wherever one exists, so the gallery shows exactly what
the API answers, with the same checks and the same errors.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).parent


def mount(app: FastAPI) -> None:
    from atelier.api.ui import jobs_pages
    from atelier.catalogue import pages as catalogue_pages
    from atelier.generation import pages as generation_pages
    from atelier.training import pages as training_pages
    from atelier.trends import pages as trend_pages

    for pages in (jobs_pages, generation_pages, training_pages, catalogue_pages, trend_pages):
        app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
