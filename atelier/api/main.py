"""The FastAPI app: thin routes over core services. It never imports torch or the workers."""

from __future__ import annotations

from fastapi import FastAPI

from atelier.api import metrics, overload, ui
from atelier.api.limits import LimitsMiddleware
from atelier.api.observability import ObservabilityMiddleware
from atelier.api.routes import health, jobs, keys
from atelier.catalogue import routes as catalogue
from atelier.core.config import get_settings
from atelier.core.logging import configure_logging
from atelier.core.queue import send_in_background
from atelier.generation import routes as generation
from atelier.training import model_routes as models
from atelier.training import routes as training
from atelier.training import schedule_routes as schedules
from atelier.trends import routes as trends
from atelier.tryon import routes as tryon


def create_app() -> FastAPI:
    configure_logging("api")
    send_in_background()  # a request never waits on the broker: the reconciler covers a failed send
    # In production the interactive docs and the schema are off unless ATELIER_PUBLIC_DOCS: they map
    # every route for whoever asks. app.openapi() still builds the schema for the client's tests.
    docs = get_settings().docs_enabled
    app = FastAPI(
        title="Atelier",
        version="0.1.0",
        description="GAN training and bulk design generation",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.include_router(health.router)
    app.include_router(catalogue.router)
    app.include_router(jobs.router)
    app.include_router(generation.router)
    app.include_router(training.router)
    app.include_router(models.router)
    app.include_router(schedules.router)
    app.include_router(tryon.router)
    app.include_router(trends.router)
    app.include_router(keys.router)
    app.include_router(metrics.router)
    ui.mount(app)
    # the last one added runs first: request ids and latency around everything, then auth and body
    # limits before any body is read (a key lookup there takes one of the concurrency slots, so random
    # bearer tokens cannot go around the cap, while a refused body drains without holding a slot),
    # then overload (503 + Retry-After, never a 500 after 30 s)
    overload.install(app)
    app.add_middleware(LimitsMiddleware)
    app.add_middleware(ObservabilityMiddleware)
    return app


app = create_app()
