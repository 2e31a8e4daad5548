import io
import random
import zipfile

import pytest
from PIL import Image

from atelier.catalogue.archives import Member, expand
from atelier.catalogue.photos import RejectedImage, prepare_for_training, validate_image
from atelier.catalogue.service import normalize_category
from atelier.catalogue.synthetic import catalogue_zip, draw_garment, encode, make_catalogue
from atelier.core.config import Settings

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def jpeg_with_exif(orientation: int) -> bytes:
    img = Image.new("RGB", (60, 30), (200, 10, 10))
    img.paste((10, 10, 200), (0, 0, 30, 30))  # left half blue, so rotation is visible
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "ACME Camera"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}  # GPSInfo
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif, quality=95)
    return out.getvalue()


def test_valid_jpeg_is_kept_byte_for_byte():
    data = encode(draw_garment("dress", random.Random(1)))
    clean = validate_image(data, **LIMITS)
    assert clean.data == data and clean.format == "JPEG" and (clean.width, clean.height) == (96, 96)


def test_exif_orientation_applied_and_location_and_device_dropped():
    clean = validate_image(jpeg_with_exif(6), **LIMITS)  # 6 = rotate 90° clockwise to display
    img = Image.open(io.BytesIO(clean.data))
    assert img.size == (30, 60)
    exif = img.getexif()
    assert 0x8825 not in exif and 0x010F not in exif and 0x0112 not in exif
    assert b"ACME" not in clean.data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is a text file" * 10, "not an image"),
        (encode(draw_garment("hat", random.Random(2)))[:600], "corrupt image"),
        (encode(Image.new("RGB", (8, 8))), "too small"),
    ],
    ids=["empty", "non-image", "truncated", "tiny"],
)
def test_rejected_files_name_the_reason(data, reason):
    with pytest.raises(RejectedImage, match=reason):
        validate_image(data, **LIMITS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_file_cut_in_its_first_half_is_corrupt_not_a_non_image(fmt):
    # an upload cut short keeps its signature: the reason must say corrupt wherever the cut falls,
    # the header included (a PNG missing only its end chunk still decodes, and is kept re-encoded)
    data = encode(draw_garment("hat", random.Random(117)), fmt)
    for cut in range(12, len(data) // 2):
        with pytest.raises(RejectedImage, match="^corrupt image"):
            validate_image(data[:cut], **LIMITS)


def test_oversized_file_rejected_before_decoding():
    data = encode(draw_garment("dress", random.Random(3)))
    with pytest.raises(RejectedImage, match="file too large"):
        validate_image(data, max_bytes=len(data) - 1, max_pixels=10**7)


def test_decompression_bomb_rejected_from_its_header():
    # 6000x6000 of one colour compresses to a few KB but would decode to 108 MB
    out = io.BytesIO()
    Image.new("RGB", (6000, 6000), (255, 255, 255)).save(out, "PNG")
    assert len(out.getvalue()) < 500_000
    with pytest.raises(RejectedImage, match="decompression bomb"):
        validate_image(out.getvalue(), **LIMITS)


def test_prepared_image_is_square_and_keeps_the_whole_garment():
    tall = Image.new("RGB", (40, 120), (255, 255, 255))
    tall.paste((0, 0, 0), (10, 0, 30, 120))  # a black bar from top to bottom
    out = Image.open(io.BytesIO(prepare_for_training(encode(tall, "PNG"), 64)))
    assert out.size == (64, 64)
    # the bar still reaches the top and bottom rows: padded, not cropped
    assert out.getpixel((32, 1))[0] < 60 and out.getpixel((32, 62))[0] < 60
    assert out.getpixel((2, 32)) == (255, 255, 255)


SETTINGS = Settings(max_upload_bytes=1_000_000)


def expand_zip(name: str, data: bytes) -> tuple[list[tuple[bytes, str]], list[dict]]:
    photos, rejected = [], []
    for item in expand(io.BytesIO(data), name, settings=SETTINGS):
        if isinstance(item, Member):
            photos.append((item.data, item.category))
        else:
            rejected.append({"filename": item.name, "reason": item.reason})
    return photos, rejected


def test_zip_folders_become_categories():
    items = make_catalogue(2, ("dress", "skirt"), seed=4)
    photos, rejected = expand_zip("c.zip", catalogue_zip(items))
    assert rejected == []
    assert sorted(cat for _, cat in photos) == ["dress", "dress", "skirt", "skirt"]


@pytest.mark.parametrize("name", ["../evil/x.jpg", "/etc/x.jpg", "dress/../../x.jpg", "C:/x/y.jpg"])
def test_zip_with_path_traversal_is_refused_whole(name):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("dress/ok.jpg", encode(draw_garment("dress", random.Random(5))))
        z.writestr(name, b"x")
    photos, rejected = expand_zip("bad.zip", buf.getvalue())
    assert photos == []
    assert (
        len(rejected) == 1 and "unsafe path" in rejected[0]["reason"] and rejected[0]["filename"] == "bad.zip"
    )


def test_zip_members_without_folder_or_not_images_are_rejected_by_name():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("loose.jpg", encode(draw_garment("dress", random.Random(6))))
        z.writestr("dress/notes.txt", b"hello")
    photos, rejected = expand_zip("c.zip", buf.getvalue())
    assert photos == []
    reasons = {r["filename"]: r["reason"] for r in rejected}
    assert "no category" in reasons["c.zip:loose.jpg"]
    assert "not an image" in reasons["c.zip:dress/notes.txt"]


@pytest.mark.parametrize(
    ("raw", "expected"), [("Dress", "dress"), (" t-shirt ", "t-shirt"), ("Long Sleeve", "long-sleeve")]
)
def test_category_names_normalised(raw, expected):
    assert normalize_category(raw) == expected


@pytest.mark.parametrize("raw", ["", "../x", "a/b", "x" * 65])
def test_bad_category_names_refused(raw):
    with pytest.raises(ValueError, match="category"):
        normalize_category(raw)


def thin_png(width: int = 100_000, height: int = 400) -> bytes:
    """A long, thin strip: a few KB of PNG, under the pixel cap, that pads to a width^2 square."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (250, 250, 250)).save(out, "PNG")
    return out.getvalue()


def test_a_long_thin_photo_is_refused_at_upload_naming_the_aspect_limit():
    data = thin_png()
    assert len(data) < 200_000
    with pytest.raises(RejectedImage, match="ATELIER_MAX_ASPECT_RATIO"):
        validate_image(data, max_bytes=5_000_000, max_pixels=40_000_000, max_aspect=10.0)
    # the shape of an ordinary garment photo passes
    tall = encode(Image.new("RGB", (100, 400), (250, 250, 250)), "PNG")
    assert validate_image(tall, max_bytes=5_000_000, max_pixels=40_000_000, max_aspect=10.0).height == 400


def test_preparation_checks_the_shape_before_decoding():
    with pytest.raises(RejectedImage, match="ATELIER_MAX_ASPECT_RATIO"):
        prepare_for_training(thin_png(), 64, max_pixels=40_000_000, max_aspect=10.0)


def test_preparing_a_thin_photo_never_allocates_the_padded_square():
    """With the aspect check out of the way (a photo stored before it existed), preparation resizes before
    it pads: peak memory stays near the decoded strip (40 Mpx = 120 MB), not 100000^2 pixels (30 GB)."""
    import resource

    data = thin_png(100_000, 400)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = Image.open(io.BytesIO(prepare_for_training(data, 64, max_pixels=40_000_000, max_aspect=1e9)))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert out.size == (64, 64)
    assert grown_mb < 600, f"peak memory grew by {grown_mb:.0f} MB"


def test_training_decode_of_a_thin_photo_is_bounded_too():
    import resource

    from atelier.gan.data import decode_photo

    data = thin_png(100_000, 400)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tensor = decode_photo(data, 32)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert tuple(tensor.shape) == (32, 32, 3)
    assert grown_mb < 600, f"peak memory grew by {grown_mb:.0f} MB"
