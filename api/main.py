"""The FastAPI app: thin routes over core services. It never imports torch or the workers."""

from __future__ import annotations

from fastapi import FastAPI

from api import overload
from api.routes import catalogue, generation, health, jobs, models, schedules, training, trends, tryon
from core.queue import send_in_background


def create_app() -> FastAPI:
    send_in_background()  # a request never waits on the broker: the reconciler covers a failed send
    app = FastAPI(title="Atelier", version="0.1.0", description="GAN training and bulk design generation")
    app.include_router(health.router)
    app.include_router(catalogue.router)
    app.include_router(jobs.router)
    app.include_router(generation.router)
    app.include_router(training.router)
    app.include_router(models.router)
    app.include_router(schedules.router)
    overload.install(app)  # 503 + Retry-After under overload, never a 500 after 30 s
    app.include_router(tryon.router)
    app.include_router(trends.router)
    return app


app = create_app()
