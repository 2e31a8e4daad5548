"""PNG figures drawn with Pillow (no matplotlib on workers): sample grids and loss curves.

sample_grid_png(G, class_names, per_row, seed)  one row per category, category name on the left;
                                                 cell (row c, column j) is seed + c * per_row + j
loss_curve_png(history)                          loss_d and loss_g against step, with axes
"""

from __future__ import annotations

import io

import torch
from PIL import Image, ImageDraw

from .sampling import generate, to_hwc

LABEL_W, PAD = 96, 2
COLOURS = {"loss_d": (31, 119, 180), "loss_g": (214, 39, 40)}


def grid_image(
    images_u8: torch.Tensor, row_names: list[str], per_row: int, cell: int | None = None
) -> Image.Image:
    n, _, r, _ = images_u8.shape
    cell = cell or max(r, 48)  # small models are upscaled (nearest) so a 32 px grid stays legible
    rows = (n + per_row - 1) // per_row
    canvas = Image.new("RGB", (LABEL_W + per_row * (cell + PAD) + PAD, rows * (cell + PAD) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = to_hwc(images_u8)
    for i in range(n):
        row, col = divmod(i, per_row)
        tile = Image.fromarray(pixels[i]).resize((cell, cell), Image.Resampling.NEAREST)
        canvas.paste(tile, (LABEL_W + PAD + col * (cell + PAD), PAD + row * (cell + PAD)))
    for row, name in enumerate(row_names[:rows]):
        draw.text((4, PAD + row * (cell + PAD) + cell // 2 - 6), name[:14], fill=(0, 0, 0))
    return canvas


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sample_grid_png(
    G, class_names: list[str], per_row: int = 8, seed: int = 0, truncation: float | list[float] | None = 1.0
) -> bytes:
    labels = [c for c in range(len(class_names)) for _ in range(per_row)]
    seeds = [seed + i for i in range(len(labels))]
    images = generate(G, seeds=seeds, labels=labels, truncation=truncation)
    return png_bytes(grid_image(images, class_names, per_row))


def real_grid_png(dataset: dict, class_names: list[str], per_row: int = 8) -> bytes:
    """The same layout for real photos: the reference to hold a sample grid against."""
    picks = []
    for c in range(len(class_names)):
        idx = (dataset["labels"] == c).nonzero().flatten()[:per_row]
        picks.append(
            torch.cat(
                [
                    dataset["images"][idx],
                    torch.full((per_row - idx.numel(), *dataset["images"].shape[1:]), 255, dtype=torch.uint8),
                ]
            )
        )
    return png_bytes(grid_image(torch.cat(picks), class_names, per_row))


def _history_tensor(history) -> torch.Tensor:
    h = torch.as_tensor(history, dtype=torch.float64)
    return h.view(-1, 3) if h.numel() else torch.zeros(0, 3, dtype=torch.float64)


def loss_curve_png(history, width: int = 640, height: int = 360, smooth: int = 10) -> bytes:
    """``history`` rows are (step, loss_d, loss_g); curves are moving averages over ``smooth`` rows."""
    h = _history_tensor(history)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 56, width - 16, 24, height - 36
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    if h.shape[0] == 0:
        draw.text((left + 10, top + 10), "no losses recorded yet", fill=(0, 0, 0))
        return png_bytes(img)
    k = max(1, min(smooth, h.shape[0]))
    kernel = torch.ones(1, 1, k, dtype=torch.float64) / k
    curves = {}
    for col, name in ((1, "loss_d"), (2, "loss_g")):
        y = h[:, col][None, None]
        curves[name] = torch.nn.functional.conv1d(
            torch.nn.functional.pad(y, (k - 1, 0), mode="replicate"), kernel
        )[0, 0]
    steps = h[:, 0]
    lo = min(float(c.min()) for c in curves.values())
    hi = max(float(c.max()) for c in curves.values())
    if hi - lo < 1e-9:
        hi = lo + 1.0
    s0, s1 = float(steps.min()), float(steps.max())
    s1 = s1 if s1 > s0 else s0 + 1.0

    def xy(s, v):
        return (left + (s - s0) / (s1 - s0) * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top))

    for frac in (0.0, 0.5, 1.0):  # y ticks
        v = lo + frac * (hi - lo)
        y = xy(s0, v)[1]
        draw.line([left - 4, y, left, y], fill=(0, 0, 0))
        draw.text((4, y - 6), f"{v:.2f}", fill=(0, 0, 0))
    draw.text((left, bottom + 8), f"step {int(s0)}", fill=(0, 0, 0))
    draw.text((right - 70, bottom + 8), f"step {int(s1)}", fill=(0, 0, 0))
    for i, (name, c) in enumerate(curves.items()):
        pts = [xy(float(s), float(v)) for s, v in zip(steps, c, strict=False)]
        if len(pts) > 1:
            draw.line(pts, fill=COLOURS[name], width=2)
        else:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=COLOURS[name])
        draw.text((left + 10 + 90 * i, 6), name, fill=COLOURS[name])
    return png_bytes(img)


def category_chart_png(metrics: dict, class_names: list[str], min_diversity: float | None = None) -> bytes:
    """Per category, up to three bars: GAN-test (does the judge see the category), diversity (spread of
    the generated designs over that of the real photos; a line marks ``min_diversity``) and recall (held-out
    photos of the category the designs cover, over what other real photos cover). A category that is
    recognised but not varied shows a tall first bar and a short second one; one whose designs are
    varied but miss the kinds of photo the catalogue holds, a short third one."""
    bars = (
        ("GAN-test", metrics.get("gan_test_per_class") or [], (31, 119, 180)),
        ("diversity", metrics.get("diversity_per_class") or [], (44, 160, 44)),
        ("recall", metrics.get("recall_ratio_per_class") or [], (148, 103, 189)),
    )
    row, width, left, scale = 31, 520, LABEL_W, 1.2  # bars from 0 to 1.2 (diversity may pass 1)
    height = 30 + row * len(class_names) + 10
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    span = width - left - 16

    def x(v: float) -> float:
        return left + max(0.0, min(v, scale)) / scale * span

    for i, (name, _, colour) in enumerate(bars):
        draw.text((left + 110 * i, 6), name, fill=colour)
    for c, cname in enumerate(class_names):
        y = 30 + c * row
        draw.text((4, y + 4), cname[:14], fill=(0, 0, 0))
        for i, (_, values, colour) in enumerate(bars):
            v = values[c] if c < len(values) else None
            if v is None:
                continue
            top = y + 2 + i * 9
            draw.rectangle([left, top, x(v), top + 7], fill=colour)
            draw.text((x(v) + 3, top - 3), f"{v:.2f}", fill=colour)
    for v, colour in ((1.0, (128, 128, 128)), (min_diversity, (214, 39, 40))):
        if v is not None:
            draw.line([x(v), 24, x(v), height - 6], fill=colour)
    return png_bytes(img)
