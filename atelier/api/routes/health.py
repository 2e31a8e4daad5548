from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from kombu import Connection
from sqlalchemy import text

from atelier.api.deps import SessionDep, SettingsDep, StoreDep
from atelier.api.schemas import errors

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
def readyz(session: SessionDep, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["sql"] = "ok"
    except Exception as exc:
        checks["sql"] = f"failing: {type(exc).__name__}"
    try:
        with Connection(settings.broker_url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"failing: {type(exc).__name__}"
    try:
        store.ping()
        checks["s3"] = "ok"
    except Exception as exc:
        checks["s3"] = f"failing: {type(exc).__name__}"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        return JSONResponse({"detail": f"not ready: {', '.join(failing)} failing", "checks": checks}, 503)
    return JSONResponse({"status": "ready", "checks": checks})
