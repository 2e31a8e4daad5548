"""Trend reports on dated, drawn photos: a planted rise (one category's share, one colour's share) is
found and forecast upward; a flat catalogue gives a flat forecast; the charts are PNGs."""

from __future__ import annotations

import dataclasses
import io
import random
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image, ImageDraw

from atelier.catalogue.synthetic import SHAPES
from atelier.trends import charts as trend_charts
from atelier.trends.analysis import build_trend_report, forecast, photo_features

CATEGORIES = ("dress", "t-shirt", "pants", "skirt")
RED = (205, 25, 35)
OTHERS = [(30, 40, 110), (40, 140, 70), (225, 205, 60), (120, 120, 120)]


def garment(category: str, colour, rng: random.Random) -> Image.Image:  # noqa: ANN001
    img = Image.new("RGB", (64, 64), (250, 250, 250))
    jitter = rng.uniform(-3, 3)
    ImageDraw.Draw(img).polygon(
        [((x + jitter) * 0.64, (y + jitter) * 0.64) for x, y in SHAPES[category][0]],
        fill=tuple(max(0, min(255, v + rng.randint(-12, 12))) for v in colour),
    )
    return img


# Features of a drawn garment, by (category, colour, variant): a photo's mask and colours take ~60 ms,
# and the reports here are about counts and shares over hundreds of photos, so each photo reuses one
# of VARIANTS drawings of its category and colour under its own id and date (3 are too few for the
# style clusters to tell the planted skirts apart).
VARIANTS = 5
_drawn: dict[tuple, object] = {}


def drawn_features(photo_id: str, category: str, at: datetime, colour, rng: random.Random):  # noqa: ANN001, ANN201
    key = (category, tuple(colour), rng.randrange(VARIANTS))
    if key not in _drawn:
        drawing = garment(category, colour, random.Random(str(key)))
        _drawn[key] = photo_features("drawn", category, at, drawing)
    return dataclasses.replace(_drawn[key], id=photo_id, captured_at=at)


def dated_catalogue(*, planted: bool, months: int = 12, per: int = 6, seed: int = 1) -> list:
    """Per month: `per` of each category (skirts 2 + month when planted); red garments are a share
    that rises from 0 to 60 % when planted; otherwise every month has the same colours."""
    rng = random.Random(seed)
    photos = []
    for m in range(months):
        at = datetime(2026 + (m // 12), m % 12 + 1, 10, tzinfo=UTC)
        red_share = 0.6 * m / (months - 1) if planted else 0.15
        for category in CATEGORIES:
            n = 2 + m if planted and category == "skirt" else per
            for i in range(n):
                if planted:
                    colour = RED if rng.random() < red_share else rng.choice(OTHERS)
                else:  # the same colours every month
                    colour = [RED, *OTHERS][i % 5]
                photo_id = f"{m}-{category}-{i}"
                photos.append(drawn_features(photo_id, category, at, colour, rng))
    return photos


@pytest.fixture(scope="module")
def planted_photos():
    return dated_catalogue(planted=True)


@pytest.fixture(scope="module")
def planted_report(planted_photos):
    return build_trend_report(planted_photos, period="month", horizon=3)


def test_the_planted_category_and_colour_are_found_rising_and_forecast_up(planted_report):
    report, _ = planted_report
    assert report["periods"][0] == "2026-01" and report["periods"][-1] == "2026-12"
    assert report["forecast"]["periods"] == ["2027-01", "2027-02", "2027-03"]
    rising = report["findings"]["rising_categories"]
    assert [f["category"] for f in rising] == ["skirt"]
    skirts = report["category_mix"]["shares"]["skirt"]
    assert skirts[0] == pytest.approx(2 / 20, abs=1e-3) and skirts[-1] == pytest.approx(13 / 31, abs=1e-3)
    fc = report["forecast"]["category_mix"]["skirt"]
    assert fc["mean"][0] > skirts[-1] - 0.02 and fc["mean"][-1] > fc["mean"][0]  # it keeps rising
    assert all(lo <= m <= hi for lo, m, hi in zip(fc["lower"], fc["mean"], fc["upper"], strict=True))
    assert {f["category"] for f in report["findings"]["falling_categories"]} == {"dress", "t-shirt", "pants"}
    top_colour = report["findings"]["rising_colours"][0]
    assert top_colour["name"] == "red"
    assert top_colour["last_share"] > top_colour["first_share"] + 0.3
    red = report["forecast"]["colour_shares"][top_colour["hex"]]["mean"]
    assert red[-1] > red[0] > report["colours"]["shares"][top_colour["hex"]][-4]
    assert report["rising_palette"][0] == top_colour["hex"]
    # dominant colours per category come from garment pixels only: the white backdrop is never one
    december = report["colours"]["per_category"]["skirt"]["2026-12"]
    assert december[0]["name"] == "red" and all(c["name"] != "white" for c in december)
    assert sum(report["forecast"]["next_mix"].values()) == pytest.approx(1.0, abs=1e-3)


def test_style_clusters_grow_with_the_planted_category(planted_report):
    report, _ = planted_report
    clusters = report["style_clusters"]
    assert sum(c["size"] for c in clusters) == report["photos"]
    growing = [c for c in clusters if c["id"] in report["findings"]["growing_clusters"]]
    assert growing and growing[0]["top_category"] == "skirt"
    assert all(len(c["examples"]) >= 1 for c in clusters)


def test_a_flat_catalogue_gives_a_flat_forecast():
    report, _ = build_trend_report(dated_catalogue(planted=False, per=5), period="month", horizon=4)
    assert report["findings"]["rising_categories"] == [] and report["findings"]["falling_categories"] == []
    for fc in report["forecast"]["category_mix"].values():
        assert fc["mean"] == pytest.approx([0.25] * 4, abs=0.01)
    for h, fc in report["forecast"]["colour_shares"].items():
        last = report["colours"]["shares"][h][-1]
        assert abs(fc["mean"][-1] - fc["mean"][0]) < 0.03, h
        assert fc["lower"][0] <= last + 0.1


def test_forecast_and_errors():
    assert forecast([0.2] * 8, 2) == {"mean": [0.2, 0.2], "lower": [0.2, 0.2], "upper": [0.2, 0.2]}
    up = forecast([0.1, 0.15, 0.19, 0.26, 0.3, 0.34, 0.41, 0.45], 3)
    assert up["mean"][0] < up["mean"][1] < up["mean"][2] and up["upper"][2] > up["mean"][2]
    one_month = dated_catalogue(planted=False, months=1, per=1)
    with pytest.raises(ValueError, match="at least 2 periods"):
        build_trend_report(one_month, period="month", horizon=2)
    with pytest.raises(ValueError, match="no catalogue photos"):
        build_trend_report([], period="month", horizon=2)


def test_seasons_and_charts(planted_photos, planted_report):
    report, data = planted_report
    charts = trend_charts.render_charts(report, data)
    assert set(charts) == {"mix", "colours", "clusters"}
    for name, png in charts.items():
        img = Image.open(io.BytesIO(png))
        img.load()
        assert img.format == "PNG" and img.width >= 600, name
        assert np.asarray(img.convert("L")).std() > 10  # not a blank canvas
    seasons, _ = build_trend_report(planted_photos, period="season", horizon=1)
    assert seasons["periods"] == ["2026-winter", "2026-spring", "2026-summer", "2026-autumn", "2027-winter"]
