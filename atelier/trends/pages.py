"""Gallery pages for trend reports.

GET  /ui/trends        the reports, newest first (by cursor), and the form to request one
POST /ui/trends        submit (CSRF) -> the report's page
GET  /ui/trends/{id}   key figures (category mix, forecast with its interval, rising and falling
                       colours, style clusters) and the charts, presigned as GET /v1/trend-reports/{id}
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from atelier.api.deps import SessionDep, SettingsDep, StoreDep
from atelier.api.ui.render import render
from atelier.api.ui.session import Csrf, UiRead, UiSubmit
from atelier.core import ownership
from atelier.core.models import Job
from atelier.core.pagination import BadCursor, page
from atelier.trends import routes as trend_routes
from atelier.trends.service import TrendParams

router = APIRouter(prefix="/ui", include_in_schema=False)
PERIODS = ("week", "month", "season")


def _reports(session, key, cursor: str | None, limit: int) -> tuple[list[Job], str | None]:  # noqa: ANN001
    stmt = ownership.visible(select(Job), key).where(Job.kind == "trend")
    try:
        return page(stmt, session=session, time_col=Job.created_at, id_col=Job.id, limit=limit, cursor=cursor)
    except BadCursor as exc:
        raise HTTPException(422, detail=f"cursor: {exc}") from exc


def _list(request: Request, key, session, settings, *, cursor=None, values=None, error=None, status_code=200):  # noqa: ANN001, ANN202
    rows, next_cursor = _reports(session, key, cursor, settings.ui_page_size)
    return render(
        request,
        "trends.html",
        key,
        status_code=status_code,
        reports=rows,
        next_cursor=next_cursor,
        values=values or {"period": "month", "horizon": "3"},
        periods=PERIODS,
        max_horizon=settings.trend_max_horizon,
        error=error,
    )


@router.get("/trends")
def trends_page(
    request: Request, key: UiRead, session: SessionDep, settings: SettingsDep, cursor: str | None = None
):
    return _list(request, key, session, settings, cursor=cursor)


def _request_body(form: dict[str, Any]) -> dict[str, Any]:
    """The form's fields as a /v1/trend-reports body: blanks left out, categories split on commas."""
    body: dict[str, Any] = {"period": form.get("period") or "month"}
    for field in ("horizon", "since", "until"):
        if str(form.get(field) or "").strip():
            body[field] = str(form[field]).strip()
    categories = [c.strip() for c in str(form.get("categories") or "").split(",") if c.strip()]
    if categories:
        body["categories"] = categories
    return body


@router.post("/trends")
async def trends_submit(request: Request, key: UiSubmit, _: Csrf, session: SessionDep, settings: SettingsDep):
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    # the submit reads and writes SQL: on a worker thread, never on the event loop that serves everyone
    return await run_in_threadpool(_submit, request, key, session, settings, form)


def _submit(request: Request, key, session, settings, form: dict[str, str]):  # noqa: ANN001, ANN202
    try:
        body = TrendParams.model_validate(_request_body(form))
        job = trend_routes.submit_trend_report(
            body=body, key=key, session=session, settings=settings, response=Response()
        )
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _list(request, key, session, settings, values=form, error=msg, status_code=422)
    except HTTPException as exc:
        detail = exc.detail
        if isinstance(detail, list):
            detail = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in detail)
        return _list(
            request, key, session, settings, values=form, error=str(detail), status_code=exc.status_code
        )
    return RedirectResponse(f"/ui/trends/{job.id}", status_code=303)


@router.get("/trends/{job_id}")
def trend_page(request: Request, job_id: str, key: UiRead, session: SessionDep, store: StoreDep):
    out = trend_routes.get_trend_report(job_id=job_id, key=key, session=session, store=store)
    return render(
        request, "trend.html", key, job=out.job, report=out.report, charts=out.charts, **figures(out.report)
    )


def figures(report: dict[str, Any] | None) -> dict[str, Any]:
    """What the page shows of a report: per category its last share, trend and forecast interval."""
    if not report:
        return {"mix": [], "colours": {}}
    forecast = report["forecast"]
    mix = []
    for cat in report["categories"]:
        shares = report["category_mix"]["shares"][cat]
        trend = report["category_mix"]["trends"][cat]
        fc = forecast["category_mix"][cat]
        mix.append(
            {
                "category": cat,
                "last": shares[-1] if shares else 0.0,
                "direction": trend["direction"],
                "slope": trend["slope"],
                "p_value": trend["p_value"],
                "next": fc["mean"][0],
                "lower": fc["lower"][0],
                "upper": fc["upper"][0],
            }
        )
    names = {c["hex"]: c["name"] for c in report["palette"]}
    return {"mix": mix, "colours": names}
