"""`atelier.trend_report`: a trend report job. Thin: read the photos' rows, load and measure each photo
(atelier.trends.analysis.photo_features), build the report and charts (pure functions), store them in S3 under
trends/<job>/, record the outcome. Idempotent: a re-delivery recomputes the same report (every choice
is seeded) and overwrites the same keys."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from sqlalchemy import select

from atelier.core import jobs, units
from atelier.core.config import get_settings
from atelier.core.models import CatalogueImage
from atelier.core.queue import TREND_REPORT
from atelier.core.storage import get_store
from atelier.trends import charts as trend_charts
from atelier.trends.analysis import build_trend_report, photo_features
from atelier.trends.service import TrendParams, report_key
from atelier.workers.celery_app import task
from atelier.workers.leases import Cancelled, Lease, lease_unit

BATCH = 50  # photos per progress update


@task(TREND_REPORT)
def trend_report(unit_id: int) -> None:
    with lease_unit(unit_id) as lease:
        if lease is not None:
            run_trend_report(lease)


def select_photos(session, params: TrendParams, limit: int) -> list[tuple]:  # noqa: ANN001
    stmt = select(
        CatalogueImage.id,
        CatalogueImage.category,
        CatalogueImage.captured_at,
        CatalogueImage.prepared_key,
        CatalogueImage.key,
    ).order_by(CatalogueImage.captured_at, CatalogueImage.id)
    if params.categories:
        stmt = stmt.where(CatalogueImage.category.in_(params.categories))
    if params.since:
        stmt = stmt.where(CatalogueImage.captured_at >= params.since)
    if params.until:
        stmt = stmt.where(CatalogueImage.captured_at < params.until)
    rows = session.execute(stmt).all()
    if len(rows) > limit:  # an even sample keeps every period's mix
        rows = [rows[int(i * len(rows) / limit)] for i in range(limit)]
    return rows


def run_trend_report(lease: Lease) -> None:
    settings = get_settings()
    store = get_store()
    params = TrendParams.model_validate(lease.params)
    rows = lease.sql(lambda s: select_photos(s, params, settings.trend_max_photos), what="reading photos")
    total = len(rows)
    lease.progress(0, total)

    def measure(row):  # noqa: ANN001, ANN202
        photo_id, category, captured_at, prepared, original = row
        blob = lease.retrying(lambda: store.get(prepared or original), what="photo read")
        with Image.open(io.BytesIO(blob)) as img:  # prepared: smaller, upright
            return photo_features(photo_id, category, captured_at, img)

    photos = []
    with ThreadPoolExecutor(max_workers=4) as pool:  # S3 reads overlap the numpy work
        for start in range(0, total, BATCH):
            photos.extend(pool.map(measure, rows[start : start + BATCH]))
            lease.progress(len(photos), total)
            if lease.should_stop:
                raise Cancelled()
    try:
        report, chart_data = build_trend_report(
            photos,
            period=params.period,
            horizon=params.horizon,
            palette_size=settings.trend_palette_size,
            style_clusters=settings.trend_style_clusters,
        )
    except ValueError as exc:  # too few photos or periods: the user's answer, not a worker fault
        reason = str(exc)
        lease.finish(
            units.FAILED,
            error=reason,
            then=lambda session, job: units.end_job(session=session, job=job, to=jobs.FAILED, error=reason),
        )
        return
    report["request"] = params.model_dump(mode="json")
    chart_keys = {}
    for name, png in trend_charts.render_charts(report, chart_data).items():
        chart_keys[name] = report_key(lease.job_id, f"{name}.png")
        lease.retrying(
            lambda k=chart_keys[name], b=png: store.put(k, b, content_type="image/png"), what="chart put"
        )
    key = report_key(lease.job_id, "report.json")
    body = json.dumps(report, indent=1).encode()
    lease.retrying(lambda: store.put(key, body, content_type="application/json"), what="report put")
    findings = report["findings"]
    summary = {
        "photos": report["photos"],
        "periods": len(report["periods"]),
        "rising_categories": [f["category"] for f in findings["rising_categories"]],
        "falling_categories": [f["category"] for f in findings["falling_categories"]],
        "rising_colours": [f"{f['name']} {f['hex']}" for f in findings["rising_colours"]],
        "next_mix": report["forecast"]["next_mix"],
        "rising_palette": report["rising_palette"],
    }
    result = {"report_key": key, "chart_keys": chart_keys, "summary": summary}
    message = f"trend report over {len(report['periods'])} {params.period}s of {report['photos']} photos"
    lease.succeed(
        then=lambda session, job: units.end_job(
            session=session, job=job, to=jobs.SUCCEEDED, result=result, message=message
        )
    )
