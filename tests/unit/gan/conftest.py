"""Factories for the GAN unit tests: synthetic garments drawn with Pillow, tiny configs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from atelier.gan.config import preset_config
from atelier.gan.data import prepare_images

REAL_DATASET = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "clothing-small"
CATEGORIES = ["dress", "hat", "pants"]


def draw_garment(category: int, seed: int, size: tuple[int, int] = (60, 80), fmt: str = "PNG") -> bytes:
    """A coloured silhouette per category on a white backdrop: enough structure for a GAN to learn."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in torch.randint(30, 220, (3,), generator=g))
    if category % 3 == 0:  # dress: a trapezoid
        d.polygon(
            [(w * 0.4, h * 0.1), (w * 0.6, h * 0.1), (w * 0.85, h * 0.9), (w * 0.15, h * 0.9)], fill=colour
        )
    elif category % 3 == 1:  # hat: a dome and a brim
        d.ellipse([w * 0.25, h * 0.3, w * 0.75, h * 0.7], fill=colour)
        d.rectangle([w * 0.1, h * 0.55, w * 0.9, h * 0.62], fill=colour)
    else:  # pants: two legs
        d.rectangle([w * 0.25, h * 0.1, w * 0.48, h * 0.9], fill=colour)
        d.rectangle([w * 0.52, h * 0.1, w * 0.75, h * 0.9], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_catalogue(n: int, categories: int = 3, size=(60, 80)) -> list[tuple[bytes, int]]:
    return [(draw_garment(i % categories, i, size), i % categories) for i in range(n)]


def tiny_config(arch: str = "atelier", num_classes: int = 3, **kw):
    # Narrow and 16 px so a step takes milliseconds; every code path of the real presets still runs.
    base = dict(
        resolution=16,
        channel_base=256,
        channel_max=32,
        z_dim=16,
        w_dim=32,
        batch_size=8,
        r1_interval=2,
        num_classes=num_classes,
    )
    base.update(kw)
    return preset_config("tiny", arch=arch, **base)


@pytest.fixture(scope="session")
def tiny_dataset() -> dict:
    d = prepare_images(make_catalogue(24), resolution=16)
    d["class_names"] = list(CATEGORIES)
    return d


def real_dataset_or_skip() -> Path:
    if not REAL_DATASET.is_dir():
        pytest.skip(f"real dataset not found at {REAL_DATASET.resolve()} (only on a developer machine)")
    return REAL_DATASET
