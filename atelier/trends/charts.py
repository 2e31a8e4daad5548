"""The charts of a trend report, as PNG bytes (matplotlib, Agg: no display needed).

mix       category shares per period, the forecast dashed with its interval as a band
colours   the palette's shares of garment pixels per period as stacked bars, forecast hatched
clusters  the fastest growing and shrinking style clusters: share over time and example thumbnails
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: workers have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100


def render_charts(report: dict[str, Any], data: dict[str, Any]) -> dict[str, bytes]:
    return {
        "mix": mix_chart(report),
        "colours": colour_chart(report),
        "clusters": cluster_chart(report, data),
    }


def _png(fig) -> bytes:  # noqa: ANN001
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()


def mix_chart(report: dict[str, Any]) -> bytes:
    periods, future = report["periods"], report["forecast"]["periods"]
    x, xf = np.arange(len(periods)), np.arange(len(periods), len(periods) + len(future))
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, (cat, shares) in enumerate(report["category_mix"]["shares"].items()):
        colour = plt.cm.tab10(i % 10)
        fc = report["forecast"]["category_mix"][cat]
        ax.plot(x, shares, "-o", color=colour, ms=3, label=cat)
        ax.plot(np.r_[x[-1], xf], np.r_[shares[-1], fc["mean"]], "--", color=colour)
        ax.fill_between(xf, fc["lower"], fc["upper"], color=colour, alpha=0.15, lw=0)
    ax.axvspan(len(periods) - 0.5, len(periods) + len(future) - 0.5, color="0.93", zorder=0)
    ax.set_xticks(np.r_[x, xf], periods + future, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share of photos")
    ax.set_ylim(0, None)
    interval = int(report["forecast"]["interval"] * 100)
    ax.set_title(f"Category mix per {report['period']}; forecast dashed, {interval} % interval shaded")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return _png(fig)


def colour_chart(report: dict[str, Any]) -> bytes:
    periods, future = report["periods"], report["forecast"]["periods"]
    palette = report["palette"]
    shares = np.array([report["colours"]["shares"][c["hex"]] for c in palette])  # (k, periods)
    fc = np.array([report["forecast"]["colour_shares"][c["hex"]]["mean"] for c in palette])
    fc = fc / np.maximum(fc.sum(axis=0), 1e-9)
    fig, ax = plt.subplots(figsize=(10, 5))
    for block, offset, hatch in ((shares, 0, None), (fc, len(periods), "//")):
        bottom = np.zeros(block.shape[1])
        for j, colour in enumerate(palette):
            label = f"{colour['name']} {colour['hex']}" if offset == 0 else None
            ax.bar(np.arange(block.shape[1]) + offset, block[j], bottom=bottom, color=colour["hex"],
                   edgecolor="0.3", lw=0.3, hatch=hatch, label=label)  # fmt: skip
            bottom += block[j]
    ax.set_xticks(
        np.arange(len(periods) + len(future)), periods + future, rotation=45, ha="right", fontsize=8
    )
    ax.set_ylabel("share of garment pixels")
    ax.set_ylim(0, 1)
    ax.set_title(
        f"Colour palette per {report['period']} (CIELAB k-means, garment pixels only); forecast hatched"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return _png(fig)


def cluster_chart(report: dict[str, Any], data: dict[str, Any], *, rows: int = 3, thumbs: int = 5) -> bytes:
    clusters = report["style_clusters"]  # sorted by slope, growing first
    shown = clusters[:rows] + [c for c in clusters[-rows:] if c not in clusters[:rows]]
    fig = plt.figure(figsize=(2.2 * (thumbs + 2), 2.1 * len(shown)))
    grid = fig.add_gridspec(len(shown), thumbs + 2, hspace=0.55, wspace=0.1)
    for r, cluster in enumerate(shown):
        ax = fig.add_subplot(grid[r, :2])
        ax.plot(cluster["shares"], "-o", ms=2, color="tab:green" if cluster["slope"] > 0 else "tab:red")
        what = f"{cluster['top_category']}, {cluster['size']} photos"
        ax.set_title(f"cluster {cluster['id']} ({what}): {cluster['trend']}", fontsize=8)
        ax.set_ylim(0, None)
        ax.set_xticks(range(len(report["periods"])), report["periods"], rotation=45, ha="right")
        ax.tick_params(labelsize=5)
        for t, photo_id in enumerate(cluster["examples"][:thumbs]):
            tax = fig.add_subplot(grid[r, 2 + t])
            tax.imshow(data["thumbs"][photo_id])
            tax.axis("off")
    fig.suptitle(f"Style clusters growing and shrinking per {report['period']}, with examples")
    return _png(fig)
