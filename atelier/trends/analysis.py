"""Trend reports: dated catalogue photos -> per-period category mix, colours, style clusters, forecast.

    photos (category, captured_at, image)
      ├─ photo_features: garment mask (backdrop removed) -> Lab garment pixels, a style vector, a thumbnail
      ├─ category mix per period                       counts and shares
      ├─ palette: k-means in CIELAB over garment pixels of every photo; colour shares per period
      │  (overall and per category), each photo weighted by its garment pixels
      ├─ style clusters: k-means over style vectors (silhouette + colour statistics), share per period
      ├─ trend per series: least-squares slope per period and its p-value (scipy.stats.linregress);
      │  rising or falling when significant and the line moves at least MIN_CHANGE of the mean
      └─ forecast per series: statsmodels ETSModel, additive error, with an additive trend where the
         slope test finds one, mean and an 80 % prediction interval for the next `horizon` periods,
         clipped to 0..1

Pure functions (numpy, scipy, statsmodels): no SQL, S3 or Celery; atelier/trends/tasks.py feeds them.
Every random choice is seeded, so the same photos give the same report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image
from scipy.cluster.vq import kmeans2
from scipy.stats import linregress

from atelier.catalogue.periods import label, ordinal
from atelier.imaging.colour import colour_name, lab_to_rgb, rgb_to_lab, to_hex
from atelier.imaging.masks import garment_mask

THUMB = 64  # photos are analysed at this size: colours and silhouettes need no more
PIXELS_PER_PHOTO = 256  # garment pixels sampled per photo for the palette
SILHOUETTE = 12  # the style vector's silhouette grid
INTERVAL = 0.8  # the forecast's prediction interval
TREND_P = 0.05  # a slope counts as a trend below this p-value
MIN_CHANGE = 0.25  # ... and when its fitted line moves at least this fraction of its mean share
MERGE_DELTA_E = 16.0  # palette colours closer than this in CIELAB are one colour


@dataclass
class PhotoFeatures:
    id: str
    category: str
    captured_at: datetime
    lab: np.ndarray  # (n, 3) garment pixels in CIELAB
    garment_pixels: int  # how many pixels of the thumbnail are garment: the photo's colour weight
    style: np.ndarray  # (d,) silhouette and colour statistics
    thumb: np.ndarray  # (THUMB, THUMB, 3) uint8, the padded photo


def photo_features(photo_id: str, category: str, captured_at: datetime, img: Image.Image) -> PhotoFeatures:
    rgb = img.convert("RGB")
    rgb.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    arr = np.asarray(rgb)
    backdrop = tuple(
        int(v) for v in np.median(np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]), axis=0)
    )
    square = Image.new("RGB", (THUMB, THUMB), backdrop)
    square.paste(rgb, ((THUMB - rgb.width) // 2, (THUMB - rgb.height) // 2))
    pixels = np.asarray(square)
    mask = garment_mask(square)
    if mask.sum() < 16:  # nothing stands out from the backdrop: take the whole photo rather than nothing
        mask = np.ones_like(mask)
    garment = pixels[mask]
    step = max(1, len(garment) // PIXELS_PER_PHOTO)
    lab = rgb_to_lab(garment[::step][:PIXELS_PER_PHOTO])
    silhouette = (
        np.asarray(
            Image.fromarray((mask * 255).astype(np.uint8)).resize(
                (SILHOUETTE, SILHOUETTE), Image.Resampling.BOX
            ),
            dtype=np.float64,
        ).ravel()
        / 255
    )
    colour_stats = np.concatenate([lab.mean(axis=0) / 50, lab.std(axis=0) / 25])
    style = np.concatenate([silhouette, colour_stats])
    return PhotoFeatures(photo_id, category, captured_at, lab, int(mask.sum()), style, pixels)


# ---------------------------------------------------------------- series


def trend_of(series: list[float]) -> dict[str, float]:
    """Least-squares slope per period, its p-value, the first and last values of the series, and how
    far the fitted line moves over the window relative to the series' mean (a small colour doubling
    its share is a trend; a big one moving by the same amount is not)."""
    y = np.asarray(series, dtype=np.float64)
    ends = {"first": float(y[0]), "last": float(y[-1])}
    if len(y) < 3 or np.ptp(y) == 0:
        return {"slope": 0.0, "p_value": 1.0, "change": 0.0, **ends}
    fit = linregress(np.arange(len(y)), y)
    change = fit.slope * (len(y) - 1) / max(float(y.mean()), 0.01)
    return {"slope": float(fit.slope), "p_value": float(fit.pvalue), "change": float(change), **ends}


def direction(trend: dict[str, float], family: int = 1) -> str:
    """rising / falling / steady. `family` is how many series are tested together (the categories, or
    the palette): the p-value threshold is divided by it (Bonferroni), or among eight noisy colour
    series one would often "trend" by chance."""
    if trend["p_value"] < TREND_P / max(1, family) and abs(trend["change"]) >= MIN_CHANGE:
        return "rising" if trend["slope"] > 0 else "falling"
    return "steady"


def forecast(series: list[float], horizon: int, family: int = 1) -> dict[str, list[float]]:
    """The next `horizon` values of a share series with an 80 % interval, by exponential smoothing."""
    y = np.asarray(series, dtype=np.float64)
    if np.ptp(y) < 1e-9:  # a constant series: nothing to fit, the forecast is the constant
        flat = [float(y[-1])] * horizon
        return {"mean": flat, "lower": flat, "upper": flat}
    import pandas as pd  # statsmodels' prediction frames need an indexed series
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    # An additive trend only where the series has one (the report's own slope test, on enough
    # periods): noise on a flat series must not become a slope, and a level-only model on a rising
    # series degenerates into a random walk that forecasts its last, noisy value.
    trend = "add" if len(y) >= 6 and direction(trend_of(list(y)), family) != "steady" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on short series; the interval shows the doubt
        fit = ETSModel(pd.Series(y), error="add", trend=trend).fit(disp=False)
        frame = fit.get_prediction(start=len(y), end=len(y) + horizon - 1).summary_frame(alpha=1 - INTERVAL)
    clip = lambda values: [float(np.clip(v, 0.0, 1.0)) for v in values]  # noqa: E731
    return {"mean": clip(frame["mean"]), "lower": clip(frame["pi_lower"]), "upper": clip(frame["pi_upper"])}


def _fill_gaps(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Shares of periods without photos, interpolated from their neighbours."""
    if present.all():
        return values
    x = np.arange(len(values))
    return np.interp(x, x[present], values[present])


# ---------------------------------------------------------------- the report


def build_trend_report(
    photos: list[PhotoFeatures],
    *,
    period: str,
    horizon: int,
    palette_size: int = 8,
    style_clusters: int = 6,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report, chart data). The report is JSON-ready; the chart data adds the thumbnails."""
    if not photos:
        raise ValueError("no catalogue photos match the report's categories and dates")
    ords = np.array([ordinal(p.captured_at, period) for p in photos])
    first, last = int(ords.min()), int(ords.max())
    n_periods = last - first + 1
    if n_periods < 2:
        raise ValueError(
            f"a trend needs photos in at least 2 periods; all {len(photos)} are in {label(first, period)}"
        )
    idx = ords - first
    labels = [label(first + i, period) for i in range(n_periods)]
    future = [label(last + 1 + i, period) for i in range(horizon)]
    categories = sorted({p.category for p in photos})
    cat_of = np.array([categories.index(p.category) for p in photos])

    counts = np.zeros((n_periods, len(categories)), dtype=np.int64)
    np.add.at(counts, (idx, cat_of), 1)
    totals = counts.sum(axis=1)
    present = totals > 0
    mix = _fill_gaps_2d(counts / np.maximum(totals, 1)[:, None], present)

    # Palette: one k-means over every photo's garment pixels, so that periods share one set of colours.
    rng = np.random.default_rng(seed)
    pixels = np.concatenate([p.lab for p in photos])
    if len(pixels) > 60_000:
        pixels = pixels[rng.choice(len(pixels), 60_000, replace=False)]
    k = max(1, min(palette_size, len(pixels) // 20))
    centres, assign = kmeans2(pixels, k, minit="++", seed=seed, iter=20)
    # k-means splits a big colour before it finds a small one: merge centres closer than a visible step
    sizes = np.bincount(assign, minlength=k)
    keep: list[int] = []
    for j in np.argsort(-sizes):
        if sizes[j] and all(np.linalg.norm(centres[j] - centres[i]) >= MERGE_DELTA_E for i in keep):
            keep.append(int(j))
    centres, k = centres[keep], len(keep)
    # weight per photo and palette colour: its garment pixel count times the fraction nearest that colour
    weights = np.zeros((len(photos), k))
    for i, p in enumerate(photos):
        nearest = ((p.lab[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        weights[i] = np.bincount(nearest, minlength=k) / len(nearest) * p.garment_pixels
    order = np.argsort(-weights.sum(axis=0))  # palette by overall weight, largest first
    centres, weights = centres[order], weights[:, order]
    hexes = [to_hex(lab_to_rgb(c)) for c in centres]
    palette = [
        {"hex": h, "name": colour_name(c), "lab": [round(float(v), 1) for v in c]}
        for h, c in zip(hexes, centres, strict=True)
    ]
    colour_w = np.zeros((n_periods, k))
    np.add.at(colour_w, idx, weights)
    colour_shares = _fill_gaps_2d(colour_w / np.maximum(colour_w.sum(axis=1), 1e-9)[:, None], present)

    per_category_colours: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for c, cat in enumerate(categories):
        per_category_colours[cat] = {}
        for t in range(n_periods):
            w = weights[(idx == t) & (cat_of == c)].sum(axis=0)
            if w.sum() > 0:
                top = np.argsort(-w)[:3]
                per_category_colours[cat][labels[t]] = [
                    {"hex": hexes[j], "name": palette[j]["name"], "share": round(float(w[j] / w.sum()), 4)}
                    for j in top
                ]

    clusters, members = _style_clusters(photos, idx, n_periods, present, style_clusters, seed)

    mix_trends = {cat: trend_of(list(mix[:, c])) for c, cat in enumerate(categories)}
    colour_trends = {h: trend_of(list(colour_shares[:, j])) for j, h in enumerate(hexes)}
    n_cat, n_col = len(categories), len(hexes)
    mix_forecast = {cat: forecast(list(mix[:, c]), horizon, n_cat) for c, cat in enumerate(categories)}
    colour_forecast = {h: forecast(list(colour_shares[:, j]), horizon, n_col) for j, h in enumerate(hexes)}

    def finding(key: str, value: str, tr: dict[str, float], fc: dict[str, list[float]], **extra: Any):
        return {
            key: value,
            **extra,
            "slope_per_period": round(tr["slope"], 5),
            "p_value": round(tr["p_value"], 5),
            "first_share": round(tr["first"], 4),
            "last_share": round(tr["last"], 4),
            "forecast_share": round(fc["mean"][-1], 4),
        }

    def ranked(trends: dict[str, dict[str, float]], want: str) -> list[str]:
        names = [n for n, tr in trends.items() if direction(tr, len(trends)) == want]
        return sorted(names, key=lambda n: -abs(trends[n]["slope"]))

    colour_names = {h: palette[j]["name"] for j, h in enumerate(hexes)}
    findings = {
        f"{want}_categories": [
            finding("category", c, mix_trends[c], mix_forecast[c]) for c in ranked(mix_trends, want)
        ]
        for want in ("rising", "falling")
    }
    for want in ("rising", "falling"):
        findings[f"{want}_colours"] = [
            finding("hex", h, colour_trends[h], colour_forecast[h], name=colour_names[h])
            for h in ranked(colour_trends, want)
        ]
    findings["growing_clusters"] = [c["id"] for c in clusters if c["trend"] == "rising"]
    findings["shrinking_clusters"] = [c["id"] for c in clusters if c["trend"] == "falling"]

    report = {
        "period": period,
        "periods": labels,
        "photos": len(photos),
        "photos_per_period": [int(v) for v in totals],
        "categories": categories,
        "category_mix": {
            "counts": {cat: [int(v) for v in counts[:, c]] for c, cat in enumerate(categories)},
            "shares": {cat: [round(float(v), 4) for v in mix[:, c]] for c, cat in enumerate(categories)},
            "trends": {
                cat: _rounded(t) | {"direction": direction(t, n_cat)} for cat, t in mix_trends.items()
            },
        },
        "palette": palette,
        "colours": {
            "shares": {h: [round(float(v), 4) for v in colour_shares[:, j]] for j, h in enumerate(hexes)},
            "trends": {h: _rounded(t) | {"direction": direction(t, n_col)} for h, t in colour_trends.items()},
            "per_category": per_category_colours,
        },
        "style_clusters": clusters,
        "forecast": {
            "horizon": horizon,
            "periods": future,
            "interval": INTERVAL,
            "method": "statsmodels ETSModel: additive error; additive trend where the slope is significant",
            "category_mix": {c: _rounded_lists(f) for c, f in mix_forecast.items()},
            "colour_shares": {h: _rounded_lists(f) for h, f in colour_forecast.items()},
            "next_mix": _normalised({c: f["mean"][0] for c, f in mix_forecast.items()}),
        },
        "findings": findings,
        "rising_palette": [f["hex"] for f in findings["rising_colours"]],
    }
    chart_data = {
        "members": members,
        "thumbs": {p.id: p.thumb for p in photos},
        "mix": mix,
        "colour_shares": colour_shares,
    }
    return report, chart_data


def _style_clusters(
    photos: list[PhotoFeatures], idx: np.ndarray, n_periods: int, present: np.ndarray, wanted: int, seed: int
) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    styles = np.stack([p.style for p in photos])
    z = (styles - styles.mean(axis=0)) / (styles.std(axis=0) + 1e-6)
    # a few principal directions: k-means on 200 noisy dimensions mostly clusters noise
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    reduced = z @ vt[: min(12, len(vt))].T
    k = max(1, min(wanted, len(photos) // 8))
    centres, assign = kmeans2(reduced, k, minit="++", seed=seed, iter=30)
    per_period = np.zeros((n_periods, k))
    np.add.at(per_period, (idx, assign), 1)
    shares = _fill_gaps_2d(per_period / np.maximum(per_period.sum(axis=1), 1)[:, None], present)
    clusters, members = [], {}
    for j in range(k):
        inside = np.nonzero(assign == j)[0]
        if len(inside) == 0:
            continue
        nearest = inside[np.argsort(((reduced[inside] - centres[j]) ** 2).sum(axis=1))]
        cats = [photos[i].category for i in inside]
        tr = trend_of(list(shares[:, j]))
        members[j] = [photos[i].id for i in nearest[:6]]
        clusters.append(
            {
                "id": j,
                "size": int(len(inside)),
                "top_category": max(set(cats), key=cats.count),
                "shares": [round(float(v), 4) for v in shares[:, j]],
                **_rounded(tr),
                "trend": direction(tr, k),
                "examples": members[j],
            }
        )
    clusters.sort(key=lambda c: -c["slope"])
    return clusters, members


def _fill_gaps_2d(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    return np.stack([_fill_gaps(values[:, j], present) for j in range(values.shape[1])], axis=1)


def _rounded(trend: dict[str, float]) -> dict[str, float]:
    return {k: round(trend[k], 5) for k in ("slope", "p_value", "change")}


def _rounded_lists(f: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: [round(v, 4) for v in vs] for k, vs in f.items()}


def _normalised(shares: dict[str, float]) -> dict[str, float]:
    total = sum(shares.values()) or 1.0
    return {k: round(v / total, 4) for k, v in shares.items()}
