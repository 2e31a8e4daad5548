"""Post-processing and encoding of generated designs (generation/postprocess.py), on small drawn images."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from atelier.generation import postprocess as imaging


def garment(size: int = 32, backdrop=(242, 240, 238), colour=(150, 60, 40), seed: int = 0) -> Image.Image:
    """An off-white, slightly noisy backdrop with a shaded dress that encloses a white patch."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), backdrop)
    d = ImageDraw.Draw(img)
    w = h = size
    d.polygon([(w * 0.4, h * 0.1), (w * 0.6, h * 0.1), (w * 0.9, h * 0.9), (w * 0.1, h * 0.9)], fill=colour)
    d.rectangle([w * 0.45, h * 0.5, w * 0.55, h * 0.6], fill=(255, 255, 255))  # a white print, enclosed
    arr = np.asarray(img).astype(np.int16)
    shade = np.linspace(-40, 40, size, dtype=np.int16)[None, :, None]  # left-to-right shading
    is_garment = arr.min(axis=2) < 200
    arr = np.where(is_garment[..., None], arr + shade, arr + rng.integers(-3, 4, arr.shape))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def sharpness(img: Image.Image) -> float:
    return float(np.asarray(img.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float64).var())


def test_upscale_reaches_the_size_and_is_sharper_than_plain_interpolation():
    small = garment(32)
    big = imaging.upscale(small, 128)
    assert big.size == (128, 128)
    soft = imaging.upscale(small, 128, sharpen=0)
    bilinear = small.resize((128, 128), Image.Resampling.BILINEAR)
    assert sharpness(big) > sharpness(soft) > sharpness(bilinear)
    # sharpening must not move the picture: the mean colour stays within a few levels
    assert np.abs(np.asarray(big, float).mean((0, 1)) - np.asarray(soft, float).mean((0, 1))).max() < 3


def test_recolor_keeps_the_luminance_of_every_pixel_and_its_order():
    src = garment(48)
    target = (40, 90, 200)
    out = imaging.recolor(src, [target])
    y_in = np.asarray(src.convert("RGB"), float) @ imaging.LUMA
    y_out = np.asarray(out, float) @ imaging.LUMA
    assert np.abs(y_in - y_out).max() <= 2.0  # shading kept
    order_in, order_out = np.argsort(y_in.ravel(), kind="stable"), y_out.ravel()
    assert np.all(np.diff(order_out[order_in]) >= -1.0)  # luminance order kept (up to rounding)
    # a garment pixel now has the target's hue: blue dominates where it was red
    r, g, b = np.asarray(out)[36, 24]
    assert b > g > r


def test_recolor_with_a_palette_maps_each_colour_to_itself():
    palette = [(200, 30, 30), (120, 200, 150)]
    lut = imaging.recolor_lut(palette)
    for colour in palette:
        y = round(imaging.luma(colour))
        got = (lut[y], lut[256 + y], lut[512 + y])
        assert max(abs(a - b) for a, b in zip(got, colour, strict=True)) <= 3


def test_background_becomes_clean_white_and_the_garment_stays():
    src = garment(40)
    out = np.asarray(imaging.whiten_background(src, threshold=225))
    arr = np.asarray(src)
    assert (out[0, :] == 255).all() and (out[:, 0] == 255).all()  # the backdrop, from every border
    assert (out[2, 2] == 255).all() and not (arr[2, 2] == 255).all()
    garment_px = arr.min(axis=2) < 200
    assert (out[garment_px] == arr[garment_px]).all()
    # the enclosed white print is not backdrop: it is not reachable from a border, so untouched
    assert (out[22, 20] == arr[22, 20]).all()


def test_postprocess_runs_ops_in_order_and_upscales_last_when_not_listed():
    src = np.asarray(garment(32))
    out = imaging.postprocess(src, [{"op": "background"}, {"op": "recolor", "palette": ["#2a5bd7"]}], 64)
    assert out.size == (64, 64)
    with pytest.raises(ValueError, match="unknown post-processing op"):
        imaging.postprocess(src, [{"op": "sparkle"}], 32)


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_encoding_is_deterministic_and_carries_provenance(fmt):
    prov = {
        "generator": "atelier",
        "model_version": "m1",
        "seed": 7,
        "job_id": "j1",
        "index": 3,
        "category": "dress",
    }
    img = garment(32)
    a = imaging.encode(img, fmt, provenance=prov)
    b = imaging.encode(img.copy(), fmt, provenance=dict(reversed(list(prov.items()))))
    assert a == b
    with Image.open(io.BytesIO(a)) as decoded:
        assert decoded.format == imaging.FORMATS[fmt][2] and decoded.size == (32, 32)
    got = imaging.read_provenance(a)
    assert got["generator"] == "atelier" and got["seed"] == "7" and got["job_id"] == "j1"
    assert got["category"] == "dress" and got["index"] == "3"


def test_the_tryon_op_leaves_the_image_unchanged():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    same = imaging.postprocess(np.asarray(img), [{"op": "tryon", "template": "slim-s"}], 32)
    assert np.array_equal(np.asarray(same), np.asarray(img))


def test_colour_parsing_names_the_bad_value():
    assert imaging.parse_colour("#fff") == (255, 255, 255)
    assert imaging.parse_colour("navy") == (0, 0, 128)
    with pytest.raises(ValueError, match="'#12345g'"):
        imaging.parse_colour("#12345g")
