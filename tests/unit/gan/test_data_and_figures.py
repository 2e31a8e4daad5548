import io

import pytest
import torch
from PIL import Image, ImageDraw

from atelier.gan.data import dataset_from_bytes, dataset_to_bytes, load_folder, pad_to_square, prepare_images
from atelier.gan.figures import loss_curve_png, sample_grid_png
from atelier.gan.sampling import load_generator
from atelier.gan.training import new_state, state_to_checkpoint, train

from .conftest import CATEGORIES, draw_garment, make_catalogue, real_dataset_or_skip, tiny_config


def _tall_garment() -> bytes:
    # A 40x120 canvas, red garment spanning the full height: cropping to square would cut it.
    img = Image.new("RGB", (40, 120), "white")
    ImageDraw.Draw(img).rectangle([10, 0, 29, 119], fill=(200, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_padding_keeps_aspect_ratio_and_never_crops():
    d = prepare_images([(_tall_garment(), 0)], resolution=60)
    img = d["images"][0].int()
    red = (img[0] > 150) & (img[1] < 80) & (img[2] < 80)
    rows, cols = red.any(dim=1).nonzero().flatten(), red.any(dim=0).nonzero().flatten()
    # Full height kept (top and bottom rows), width scaled by the same 1/2 factor: about 10 px of 60.
    assert rows.min() <= 1 and rows.max() >= 58
    assert 8 <= cols.numel() <= 12
    assert (img[:, :, :5] > 240).all()  # left padding is white


def test_edge_padding_uses_the_backdrop_colour():
    img = Image.new("RGB", (20, 40), (10, 120, 200))
    sq = pad_to_square(img, pad="edge")
    assert sq.size == (40, 40) and sq.getpixel((0, 0)) == (10, 120, 200)
    with pytest.raises(ValueError):
        pad_to_square(img, pad="mirror")


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (80, 40), "white")
    ImageDraw.Draw(img).rectangle([0, 0, 39, 39], fill=(0, 0, 0))  # black on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the black half must end up on top
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = prepare_images([(buf.getvalue(), 0)], resolution=32)["images"][0]
    top, bottom = out[:, 8:15, 8:24].float().mean(), out[:, 18:24, 8:24].float().mean()
    assert top < 60 and bottom > 200


def test_dataset_round_trips_through_bytes_and_skips_corrupt_files():
    items = make_catalogue(5) + [(b"not an image", 1)] + [(draw_garment(1, 9, fmt="WEBP"), 1)]
    d = prepare_images(items, resolution=16)
    assert d["images"].shape == (6, 3, 16, 16) and d["images"].dtype == torch.uint8
    assert d["labels"].tolist() == [0, 1, 2, 0, 1, 1] and d["source_index"].tolist() == [0, 1, 2, 3, 4, 6]
    back = dataset_from_bytes(dataset_to_bytes(dict(d, class_names=CATEGORIES)))
    assert torch.equal(back["images"], d["images"]) and back["class_names"] == CATEGORIES


def test_load_folder_reads_one_folder_per_category(tmp_path):
    for c, name in enumerate(CATEGORIES):
        (tmp_path / name).mkdir()
        for i in range(2):
            (tmp_path / name / f"{i}.png").write_bytes(draw_garment(c, i))
    (tmp_path / "dress" / "notes.txt").write_text("ignored")
    items, names = load_folder(tmp_path)
    assert names == CATEGORIES and [label for _, label in items] == [0, 0, 1, 1, 2, 2]


def test_real_dataset_layout_is_readable():
    root = real_dataset_or_skip()
    _, names = load_folder(root)
    assert len(names) == 10 and "dress" in names


def test_figures_are_pngs(tiny_dataset):
    state = new_state(tiny_config(), CATEGORIES)
    train(state, tiny_dataset, steps=10)
    G, _, names = load_generator(state_to_checkpoint(state))
    grid = Image.open(io.BytesIO(sample_grid_png(G, names, per_row=4)))
    assert grid.format == "PNG" and grid.height >= 3 * 48  # one row per category
    curve = Image.open(io.BytesIO(loss_curve_png(state.history)))
    assert curve.size == (640, 360)
    assert Image.open(io.BytesIO(loss_curve_png([]))).format == "PNG"
