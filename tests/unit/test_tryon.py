"""Try-on previews: each category lands in its body region, the backdrop is cut away, the garment keeps
its colour under the template's shading, and the PNG carries its own provenance."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from atelier.catalogue.synthetic import SHAPES
from atelier.generation.postprocess import encode, read_provenance
from atelier.tryon import renderer as tryon

GREEN = (0, 255, 0)  # a backdrop no garment here has: any green in a preview is leaked backdrop
RED = (200, 40, 60)
# categories without a drawing of their own borrow the nearest silhouette
DRAWING = {"shirt": "t-shirt", "longsleeve": "t-shirt", "outwear": "t-shirt", "shorts": "skirt"}


def plain_garment(category: str, colour=RED, size: int = 128) -> Image.Image:  # noqa: ANN001
    img = Image.new("RGB", (size, size), GREEN)
    draw = ImageDraw.Draw(img)
    for poly in SHAPES[DRAWING.get(category, category)]:
        draw.polygon([(x * size / 100, y * size / 100) for x, y in poly], fill=colour)
    return img


def changed(template: tryon.BodyTemplate, picture: Image.Image) -> np.ndarray:
    diff = np.abs(np.asarray(picture, dtype=int) - np.asarray(template.body, dtype=int)).sum(axis=2)
    return diff > 6


@pytest.mark.parametrize("category", sorted(tryon.CATEGORY_REGIONS))
def test_every_category_lands_in_its_region_without_backdrop(category):
    template = tryon.get_template("regular-m")
    picture = tryon.CompositeRenderer().render(plain_garment(category), category=category, template=template)
    assert picture.size == tryon.CANVAS
    where = changed(template, picture)
    rows, cols = np.nonzero(where)
    x0, y0, x1, y1 = template.regions[tryon.CATEGORY_REGIONS[category]]
    assert cols.min() >= x0 and cols.max() < x1 and rows.min() >= y0 and rows.max() < y1
    # the garment fills its region along at least one axis (it is fitted, not stamped small)
    assert (cols.max() - cols.min() + 1) >= 0.9 * (x1 - x0) or (rows.max() - rows.min() + 1) >= 0.9 * (
        y1 - y0
    )
    arr = np.asarray(picture, dtype=int)
    green = (arr[..., 1] > arr[..., 0] + 60) & (arr[..., 1] > arr[..., 2] + 60)
    assert not green.any(), "the garment's backdrop leaked into the preview"


def test_plain_colour_keeps_its_colour_under_the_shading():
    template = tryon.get_template("slim-s")
    picture = tryon.CompositeRenderer().render(plain_garment("dress"), category="dress", template=template)
    arr = np.asarray(picture, dtype=np.float64)
    inside = changed(template, picture)
    # away from the anti-aliased outline, every garment pixel is the colour times the template's shading
    core_px = inside.copy()
    for shift in (1, 2, 3):
        for axis in (0, 1):
            core_px &= np.roll(inside, shift, axis) & np.roll(inside, -shift, axis)
    expected = np.asarray(RED, dtype=np.float64) * template.shading[..., None]
    error = np.abs(arr - expected).max(axis=2)[core_px]
    assert core_px.sum() > 2000
    assert np.median(error) < 2.0 and np.percentile(error, 99) < 8
    # the shading really shades: the lit centre is the colour itself, the sides are darker
    assert template.shading[core_px].max() > 0.97 and template.shading[core_px].min() < 0.9


def test_preview_decodes_and_carries_provenance():
    source = encode(
        plain_garment("t-shirt"), "webp", provenance={"seed": 7, "job_id": "J1", "generator": "atelier"}
    )
    data = tryon.preview(
        source, category="t-shirt", template="curvy-l", provenance={"job_id": "J1", "index": 3}
    )
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG" and img.size == tryon.CANVAS
    meta = read_provenance(data)
    assert meta["generator"] == "atelier-tryon" and meta["renderer"] == "composite-2d"
    assert meta["template"] == "curvy-l" and meta["region"] == "torso"
    assert meta["source_seed"] == "7" and meta["index"] == "3"


def test_templates_differ_and_errors_name_the_value():
    names = tryon.template_names()
    assert len(names) == 9 and tryon.DEFAULT_TEMPLATE in names
    torsos = {tryon.get_template(n).regions["torso"] for n in names}
    assert len(torsos) == len(names)  # every shape and size has its own proportions
    for name in names:
        for x0, y0, x1, y1 in tryon.get_template(name).regions.values():
            assert 0 <= x0 < x1 <= tryon.CANVAS[0] and 0 <= y0 < y1 <= tryon.CANVAS[1]
    with pytest.raises(tryon.UnknownTemplate, match="'giant-xl'"):
        tryon.get_template("giant-xl")
    with pytest.raises(tryon.UnknownCategory, match="'scarf'"):
        tryon.region_for("scarf")
    with pytest.raises(ValueError, match="no garment"):
        tryon.preview(encode(Image.new("RGB", (64, 64), GREEN), "png", provenance={}), category="hat")
