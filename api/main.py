"""The FastAPI app: thin routes over core services. It never imports torch or the workers."""

from __future__ import annotations

from fastapi import FastAPI

from api import metrics, ui
from api.observability import ObservabilityMiddleware
from api.routes import catalogue, generation, health, jobs, models, schedules, training
from core.logging import configure_logging


def create_app() -> FastAPI:
    configure_logging("api")
    app = FastAPI(title="Atelier", version="0.1.0", description="GAN training and bulk design generation")
    app.include_router(health.router)
    app.include_router(catalogue.router)
    app.include_router(jobs.router)
    app.include_router(generation.router)
    app.include_router(training.router)
    app.include_router(models.router)
    app.include_router(schedules.router)
    app.include_router(metrics.router)
    ui.mount(app)
    app.add_middleware(ObservabilityMiddleware)
    return app


app = create_app()
