"""Trend report requests and generation that follows a report: limits name their setting and field,
the forecast mix splits a count exactly, and only a succeeded report can be followed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atelier.core import jobs
from atelier.core.config import Settings
from atelier.generation.schemas import GenerationRequest
from atelier.trends import service as trends


def test_split_count_is_exact_and_proportional():
    assert trends.split_count(100, {"dress": 0.5, "skirt": 0.3, "hat": 0.2}) == {
        "dress": 50,
        "hat": 20,
        "skirt": 30,
    }
    split = trends.split_count(7, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert sum(split.values()) == 7 and max(split.values()) - min(split.values()) == 1
    assert trends.split_count(3, {"a": 0.98, "b": 0.02}) == {"a": 3}  # a category rounded to 0 is left out


def test_request_limits_name_their_field(session):
    settings = Settings(trend_max_horizon=6)
    with pytest.raises(trends.InvalidRequest, match="ATELIER_TREND_MAX_HORIZON=6") as info:
        trends.submit(
            session=session, settings=settings, params=trends.TrendParams(horizon=7), api_key_id=None
        )
    assert info.value.field == "horizon"
    with pytest.raises(ValidationError, match="period"):
        trends.TrendParams(period="decade")
    assert trends.TrendParams(categories=["Skirt", "dress", "skirt"]).categories == ["dress", "skirt"]


def test_generation_follows_only_a_succeeded_report(session):
    job = jobs.create_job(session=session, kind="trend", params={})
    follow = trends.FollowReport(report=job.id, count=10, palette=True)
    with pytest.raises(trends.InvalidRequest, match="is queued"):
        trends.follow(session=session, request=follow)
    job.status = jobs.SUCCEEDED
    job.result = {"summary": {"next_mix": {"dress": 0.6, "shorts": 0.4}, "rising_palette": ["#cc2233"]}}
    assert trends.follow(session=session, request=follow) == ({"dress": 6, "shorts": 4}, ["#cc2233"])
    job.result = {"summary": {"next_mix": {"dress": 1.0}, "rising_palette": []}}
    with pytest.raises(trends.InvalidRequest, match="no rising colour"):
        trends.follow(session=session, request=follow)
    with pytest.raises(trends.InvalidRequest, match="no trend report"):
        trends.follow(session=session, request=trends.FollowReport(report="nope", count=1))
    with pytest.raises(ValidationError, match="follow_report.count replaces"):
        GenerationRequest(count=5, follow_report={"report": job.id, "count": 10})


def test_periods_are_consecutive_ordinals_with_calendar_labels():
    from datetime import date

    from atelier.catalogue.periods import label, ordinal, span

    assert label(ordinal(date(2025, 12, 31), "week"), "week") == "2026-W01"  # ISO weeks cross years
    assert label(ordinal(date(2026, 1, 5), "week"), "week") == "2026-W02"
    assert label(ordinal(date(2025, 12, 1), "season"), "season") == "2026-winter"  # December: next winter
    assert span(ordinal(date(2026, 2, 1), "season"), ordinal(date(2026, 9, 1), "season"), "season") == [
        "2026-winter",
        "2026-spring",
        "2026-summer",
        "2026-autumn",
    ]
    assert ordinal(date(2026, 1, 1), "month") + 1 == ordinal(date(2026, 2, 28), "month")
    with pytest.raises(ValueError, match="'decade'"):
        ordinal(date(2026, 1, 1), "decade")
