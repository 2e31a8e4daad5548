"""Try-on previews: a generated garment, cut from its backdrop, composited onto a drawn body template.

    garment image ──> garment_mask (atelier.imaging.masks) ──> crop to the garment ──> fit into the template's
    region for its category (torso, legs, full_body, head, feet) ──> multiply by the template's shading
    ──> PNG with its own provenance (renderer, template, source image)

This is a 2D preview composite, not a neural try-on: the garment is scaled and placed, not draped or
warped to a pose. The templates (front view, three body shapes in three sizes) are drawn here by code;
no downloaded models or assets. `TryOnRenderer` is the boundary where a learned renderer can plug in
later: it takes the garment, its category and a template, and returns the preview image.

Pillow and numpy only: the API process (no torch) renders previews on request.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, PngImagePlugin

from atelier.imaging.masks import garment_mask

REGIONS = ("head", "torso", "legs", "full_body", "feet")
# Catalogue categories (clothing-small's ten and the drawn catalogue's six) -> the body region they dress.
CATEGORY_REGIONS: dict[str, str] = {
    "hat": "head",
    "t-shirt": "torso",
    "shirt": "torso",
    "longsleeve": "torso",
    "outwear": "torso",
    "pants": "legs",
    "shorts": "legs",
    "skirt": "legs",
    "dress": "full_body",
    "shoes": "feet",
}
# body shape -> (shoulder, waist, hip) half-widths as fractions of the canvas width
SHAPES: dict[str, tuple[float, float, float]] = {
    "slim": (0.20, 0.13, 0.16),
    "regular": (0.23, 0.17, 0.20),
    "curvy": (0.22, 0.15, 0.25),
}
SIZES: dict[str, float] = {"s": 0.9, "m": 1.0, "l": 1.12}  # width factor
CANVAS = (240, 400)
BACKDROP = (236, 236, 236)
SKIN = (222, 188, 160)
DEFAULT_TEMPLATE = "regular-m"
RENDERER_NAME = "composite-2d"


class UnknownCategory(ValueError):
    pass


class UnknownTemplate(ValueError):
    pass


@dataclass(frozen=True)
class BodyTemplate:
    """A front-view body: its picture, a shading map (1.0 = fully lit) and a box per region."""

    name: str
    body: Image.Image  # RGB, the figure on its backdrop
    shading: np.ndarray  # float HxW in [0.55, 1]
    regions: dict[str, tuple[int, int, int, int]]  # region -> (x0, y0, x1, y1), x1/y1 exclusive


class TryOnRenderer(Protocol):
    """Dress `template` in `garment` (RGB, any backdrop) for a garment of `category`."""

    name: str

    def render(self, garment: Image.Image, *, category: str, template: BodyTemplate) -> Image.Image: ...


def template_names() -> list[str]:
    return [f"{shape}-{size}" for shape in SHAPES for size in SIZES]


def region_for(category: str) -> str:
    try:
        return CATEGORY_REGIONS[category]
    except KeyError:
        known = ", ".join(sorted(CATEGORY_REGIONS))
        raise UnknownCategory(f"no try-on region for category {category!r}; known: {known}") from None


@lru_cache(maxsize=16)
def get_template(name: str) -> BodyTemplate:
    shape, _, size = name.partition("-")
    if shape not in SHAPES or size not in SIZES:
        raise UnknownTemplate(f"unknown template {name!r}; one of {', '.join(template_names())}")
    return _draw_template(name, SHAPES[shape], SIZES[size])


def _draw_template(name: str, halves: tuple[float, float, float], factor: float) -> BodyTemplate:
    w, h = CANVAS
    cx = w / 2
    shoulder, waist, hip = (f * w * factor for f in halves)
    y_neck, y_shoulder, y_waist, y_hip, y_knee, y_ankle = (
        f * h for f in (0.15, 0.19, 0.40, 0.52, 0.72, 0.90)
    )
    mask = Image.new("L", CANVAS, 0)
    draw = ImageDraw.Draw(mask)
    head_rx, head_ry = 0.075 * w * (0.9 + 0.1 * factor), 0.065 * h
    draw.ellipse([cx - head_rx, 0.03 * h, cx + head_rx, 0.03 * h + 2 * head_ry], fill=255)
    draw.rectangle([cx - 0.035 * w, 0.12 * h, cx + 0.035 * w, y_shoulder + 2], fill=255)
    draw.polygon(
        [
            (cx - shoulder, y_shoulder), (cx + shoulder, y_shoulder), (cx + waist, y_waist),
            (cx + hip, y_hip), (cx - hip, y_hip), (cx - waist, y_waist),
        ],
        fill=255,
    )  # fmt: skip
    arm = 0.055 * w * factor
    for side in (-1, 1):  # arms hang a little away from the torso
        top = cx + side * shoulder
        draw.polygon(
            [(top, y_shoulder), (top + side * arm, y_shoulder + 6), (top + side * 1.6 * arm, 0.50 * h),
             (top + side * 0.6 * arm, 0.50 * h), (top - side * 0.2 * arm, y_waist)],
            fill=255,
        )  # fmt: skip
        leg_out, leg_in = cx + side * hip, cx + side * 0.012 * w
        draw.polygon(
            [(leg_out, y_hip), (leg_in, y_hip), (leg_in, y_ankle),
             (cx + side * 0.09 * w * factor, y_ankle), (cx + side * 0.75 * hip, y_knee)],
            fill=255,
        )  # fmt: skip
        foot_x = cx + side * 0.065 * w * factor
        draw.ellipse([foot_x - 0.06 * w, y_ankle - 4, foot_x + 0.06 * w, 0.95 * h], fill=255)

    # Shading: lit along the body's centre line, darker toward its sides and at its outline.
    xs = (np.arange(w) - cx) / (w / 2)
    across = 1.0 - 0.30 * np.clip(np.abs(xs) / max(hip, shoulder) * (w / 2), 0, 1.4) ** 2 / 1.96
    outline = np.asarray(mask.filter(ImageFilter.GaussianBlur(6)), dtype=np.float64) / 255
    shading = np.clip(np.broadcast_to(across, (h, w)) * (0.8 + 0.2 * outline), 0.55, 1.0)
    body = np.full((h, w, 3), BACKDROP, dtype=np.float64)
    skin = np.asarray(SKIN, dtype=np.float64) * shading[..., None]
    on_body = np.asarray(mask, dtype=np.float64)[..., None] / 255
    body = body * (1 - on_body) + skin * on_body

    def box(x_half: float, y0: float, y1: float) -> tuple[int, int, int, int]:
        return (int(cx - x_half), int(y0), int(np.ceil(cx + x_half)), int(y1))

    top_half = max(shoulder + 1.6 * arm, hip)
    regions = {
        "head": box(1.6 * head_rx, 0.0, 0.03 * h + head_ry),
        "torso": box(top_half, y_neck, y_hip + 0.02 * h),
        "legs": box(hip * 1.1, y_waist + 0.04 * h, y_ankle),
        "full_body": box(max(top_half, hip * 1.6), y_neck, y_knee + 0.08 * h),
        "feet": box(0.15 * w * factor + 0.06 * w, y_ankle - 0.02 * h, 0.97 * h),
    }
    return BodyTemplate(name, Image.fromarray(body.round().astype(np.uint8)), shading, regions)


def fit_box(
    size: tuple[int, int], region: tuple[int, int, int, int], *, anchor: str
) -> tuple[int, int, int, int]:
    """The largest box of the garment's aspect inside `region`, centred across, at the anchor's edge."""
    gw, gh = size
    x0, y0, x1, y1 = region
    scale = min((x1 - x0) / gw, (y1 - y0) / gh)
    w, h = max(1, int(gw * scale)), max(1, int(gh * scale))
    left = x0 + (x1 - x0 - w) // 2
    top = {"top": y0, "bottom": y1 - h, "middle": y0 + (y1 - y0 - h) // 2}[anchor]
    return left, top, left + w, top + h


# a hat sits on the head, shoes stand on the floor; clothes hang from the shoulders or the waist
ANCHORS = {"head": "bottom", "torso": "top", "legs": "top", "full_body": "top", "feet": "bottom"}


class CompositeRenderer:
    """The 2D composite: cut, scale into the region, shade with the template, paste."""

    name = RENDERER_NAME

    def render(self, garment: Image.Image, *, category: str, template: BodyTemplate) -> Image.Image:
        region_name = region_for(category)
        rgb = garment.convert("RGB")
        mask = garment_mask(rgb)
        if not mask.any():
            raise ValueError("the image has no garment: every pixel matches the backdrop")
        rows, cols = np.nonzero(mask)
        crop = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        alpha = mask[crop[1] : crop[3], crop[0] : crop[2]].astype(np.float32)
        cut = np.asarray(rgb.crop(crop), dtype=np.float32) * alpha[..., None]
        x0, y0, x1, y1 = fit_box(
            rgb.crop(crop).size, template.regions[region_name], anchor=ANCHORS[region_name]
        )
        # Resized premultiplied by the mask: the backdrop's colour cannot bleed into the garment's edge.
        a = _resize(alpha, (x1 - x0, y1 - y0))
        colour = np.stack([_resize(cut[..., c], (x1 - x0, y1 - y0)) for c in range(3)], axis=-1)
        colour = colour / np.maximum(a, 1e-3)[..., None]
        a = np.clip(a, 0, 1)[..., None]
        shaded = np.clip(colour, 0, 255) * template.shading[y0:y1, x0:x1, None]
        out = np.asarray(template.body, dtype=np.float64).copy()
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a) + shaded * a
        return Image.fromarray(np.clip(out.round(), 0, 255).astype(np.uint8))


def _resize(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(
        Image.fromarray(plane, mode="F").resize(size, Image.Resampling.BILINEAR), dtype=np.float64
    )


RENDERERS: dict[str, TryOnRenderer] = {RENDERER_NAME: CompositeRenderer()}


def encode_png(img: Image.Image, provenance: dict[str, Any]) -> bytes:
    """PNG with the provenance as tEXt chunks, the same convention as generated images."""
    info = PngImagePlugin.PngInfo()
    for key, value in sorted(provenance.items()):
        info.add_text(str(key), str(value))
    out = io.BytesIO()
    img.convert("RGB").save(out, "PNG", compress_level=3, pnginfo=info)
    return out.getvalue()


def source_provenance(data: bytes) -> dict[str, str]:
    """The provenance a generated PNG, JPEG or WebP carries (PNG text or the EXIF description)."""
    import json

    with Image.open(io.BytesIO(data)) as img:
        if img.format == "PNG":
            return {k: str(v) for k, v in img.text.items()}
        description = img.getexif().get(0x010E)
    try:
        return {k: str(v) for k, v in json.loads(description).items()} if description else {}
    except ValueError:
        return {}


def template_of(ops: list[dict[str, Any]]) -> str | None:
    """The template of a generation job's `tryon` post-process op, or None when it has none."""
    return next((op.get("template", DEFAULT_TEMPLATE) for op in ops if op.get("op") == "tryon"), None)


def preview_key(job_id: str, index: int, template: str) -> str:
    return f"generated/{job_id}/tryon/{index:06d}-{template}.png"


def generated_provenance(
    *, job_id: str, index: int, seed: int, key: str, sha256: str, model_version: str | None
) -> dict[str, Any]:
    """What a preview of a generated image records of its source (the route's and the worker's)."""
    return {
        "job_id": job_id,
        "index": index,
        "seed": seed,
        "source_key": key,
        "source_sha256": sha256,
        "model_version": model_version or "",
    }


def preview(
    data: bytes,
    *,
    category: str,
    template: str = DEFAULT_TEMPLATE,
    renderer: str = RENDERER_NAME,
    provenance: dict[str, Any] | None = None,
) -> bytes:
    """A try-on preview PNG of the garment image `data`, with its source's provenance under `source_*`."""
    body = get_template(template)
    with Image.open(io.BytesIO(data)) as img:
        garment = img.convert("RGB")
    picture = RENDERERS[renderer].render(garment, category=category, template=body)
    meta = {f"source_{k}": v for k, v in source_provenance(data).items()}
    meta.update(
        {
            "generator": "atelier-tryon",
            "kind": "tryon-preview",
            "renderer": renderer,
            "template": template,
            "category": category,
            "region": region_for(category),
        }
    )
    meta.update(provenance or {})
    return encode_png(picture, meta)
