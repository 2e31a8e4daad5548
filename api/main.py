"""The FastAPI app: thin routes over core services. It never imports torch or the workers."""

from __future__ import annotations

from fastapi import FastAPI

from api.limits import LimitsMiddleware
from api.routes import catalogue, generation, health, jobs, keys, models, schedules, training


def create_app() -> FastAPI:
    app = FastAPI(title="Atelier", version="0.1.0", description="GAN training and bulk design generation")
    app.include_router(health.router)
    app.include_router(catalogue.router)
    app.include_router(jobs.router)
    app.include_router(generation.router)
    app.include_router(training.router)
    app.include_router(models.router)
    app.include_router(schedules.router)
    app.include_router(keys.router)
    app.add_middleware(LimitsMiddleware)  # outermost: auth and body limits before any body is read
    return app


app = create_app()
