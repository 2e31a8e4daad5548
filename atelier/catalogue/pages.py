"""Gallery page of the catalogue: counts per category and per day, drawn as bar charts (GET /ui/catalogue)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from atelier.api.deps import SessionDep
from atelier.api.ui.render import render
from atelier.api.ui.session import UiRead
from atelier.catalogue import routes as catalogue_routes

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/catalogue")
def catalogue_page(request: Request, key: UiRead, session: SessionDep):
    stats = catalogue_routes.catalogue_stats(_=key, session=session, period="month")
    return render(
        request,
        "catalogue.html",
        key,
        stats=stats,
        by_category=_bars(stats.per_category),
        by_day=_bars(dict(list(stats.per_day.items())[-60:])),
    )


def _bars(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Rows for an SVG bar chart: label, count and width as a percentage of the largest."""
    top = max(counts.values(), default=0) or 1
    return [{"label": k, "n": n, "pct": round(100 * n / top, 1)} for k, n in counts.items()]
