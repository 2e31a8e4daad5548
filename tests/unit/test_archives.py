"""Archives read one bounded member at a time: each hostile shape is a rejected entry with a reason,
never an exception; and stored photos carry no metadata of any kind."""

from __future__ import annotations

import io
import resource
import zipfile

import pytest
from PIL import Image

from atelier.catalogue.archives import Member, Rejected, expand
from atelier.catalogue.metadata import is_bare
from atelier.catalogue.photos import RejectedImage, validate_image
from atelier.core.config import Settings
from tests import hostile

SETTINGS = Settings()  # the defaults: what `atelier up` runs with
LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def run(data: bytes, settings: Settings = SETTINGS) -> tuple[list[Member], dict[str, str]]:
    items = list(expand(io.BytesIO(data), "up.zip", settings=settings))
    return [i for i in items if isinstance(i, Member)], {
        i.name: i.reason for i in items if isinstance(i, Rejected)
    }


def test_ratio_bomb_is_refused_without_inflating_it():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    members, rejected = run(hostile.ratio_bomb())
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert [m.name for m in members] == ["up.zip:dress/ok.jpg"]
    assert "ATELIER_MAX_ARCHIVE_RATIO" in rejected["up.zip:dress/bomb.jpg"]
    assert grown_mb < 15  # the 20 MB member was never inflated


def test_total_inflated_size_is_capped():
    small = Settings(max_archive_inflated_bytes=1_000_000, max_upload_bytes=400_000)
    members, rejected = run(hostile.many_members_bomb(10, 200_000), small)
    assert members == [] and "ATELIER_MAX_ARCHIVE_INFLATED_BYTES" in rejected["up.zip"]


def test_a_member_that_lies_about_its_size_is_one_rejected_entry():
    members, rejected = run(hostile.lying_member_zip())
    assert [m.category for m in members] == ["dress"]
    assert "corrupt ZIP member" in rejected["up.zip:dress/liar.jpg"]


def test_overlapping_entries_bomb_is_bounded():
    members, rejected = run(hostile.overlapping_bomb(200))
    assert members == []
    assert rejected and all("ratio" in r or "corrupt" in r or "INFLATED" in r for r in rejected.values())


def test_unsupported_methods_encrypted_nested_and_traversal():
    members, rejected = run(hostile.unsupported_methods_zip())
    assert len(members) == 1
    assert "BZIP2" in rejected["up.zip:dress/b.jpg"] and "LZMA" in rejected["up.zip:dress/l.jpg"]
    _, rejected = run(hostile.encrypted_member_zip())
    assert "encrypted" in rejected["up.zip:dress/enc.jpg"]
    members, rejected = run(hostile.nested_zip())
    assert members == [] and all("nested archive" in r for r in rejected.values()) and len(rejected) == 2
    members, rejected = run(hostile.traversal_zip())
    assert members == [] and list(rejected) == ["up.zip"] and "unsafe path" in rejected["up.zip"]


def test_not_a_zip_is_one_rejected_entry():
    members, rejected = run(b"PK\x03\x04 this is not really a zip")
    assert members == [] and rejected == {"up.zip": "corrupt ZIP archive"}


@pytest.mark.parametrize(
    "make",
    [
        hostile.jpeg_with_every_metadata,
        hostile.png_with_every_metadata,
        hostile.webp_with_every_metadata,
        hostile.jpeg_trailing_payload,
    ],
)
def test_no_metadata_survives_validation(make):
    data = make()
    assert any(leak in data for leak in hostile.LEAKS + [b"PK\x03\x04"])  # the input does carry some
    clean = validate_image(data, **LIMITS)
    for leak in hostile.LEAKS + [b"PK\x03\x04"]:
        assert leak not in clean.data, leak
    assert is_bare(clean.data, clean.format)
    img = Image.open(io.BytesIO(clean.data))
    assert not img.getexif() and not img.info.get("xmp") and "comment" not in img.info


def test_orientation_is_applied_before_it_is_dropped():
    clean = validate_image(hostile.jpeg_with_every_metadata(), **LIMITS)
    img = Image.open(io.BytesIO(clean.data)).convert("RGB")
    assert img.size == (30, 60)  # orientation 6: rotated to stand upright
    top, bottom = img.getpixel((15, 5)), img.getpixel((15, 55))
    assert top[2] > 150 and bottom[0] > 150  # the blue half is now on top


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (hostile.pixel_bomb_png(), "decompression bomb"),
        (hostile.gif_named_jpeg(), "not an image"),
        (b"%PDF-1.7\n" + b"x" * 400, "not an image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
    ],
    ids=["pixel-bomb", "gif", "pdf", "svg"],
)
def test_bombs_and_disguised_files_are_rejected(data, reason):
    with pytest.raises(RejectedImage, match=reason):
        validate_image(data, **LIMITS)


def _tiny_entries_zip(n: int) -> bytes:
    """n empty STORED members: about 50 B of local header and 80 B of central directory each."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            z.writestr(f"d/{i:07d}.jpg", b"")
    return out.getvalue()


def test_a_huge_central_directory_is_refused_before_it_is_parsed():
    import tracemalloc

    data = _tiny_entries_zip(80_000)  # 4.7 MB of central directory, ~40 MB once parsed
    tracemalloc.start()
    try:
        photos, rejected = run(data, Settings(max_zip_members=100_000))  # the size, not the count, refuses it
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert photos == [] and "ATELIER_MAX_ZIP_DIRECTORY_BYTES" in rejected["up.zip"]
    assert peak < 2 * 1024 * 1024, f"{peak} bytes traced while refusing it"


def test_the_declared_entry_count_is_checked_too():
    data = _tiny_entries_zip(300)
    photos, rejected = run(data, Settings(max_zip_members=100))
    assert photos == [] and "ATELIER_MAX_ZIP_MEMBERS" in rejected["up.zip"]


def test_a_directory_that_lies_about_its_count_is_bounded_by_its_size():
    data = bytearray(_tiny_entries_zip(30_000))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # claims one entry
    photos, rejected = run(bytes(data), Settings(max_zip_directory_bytes=1024 * 1024))
    assert photos == [] and "ATELIER_MAX_ZIP_DIRECTORY_BYTES" in rejected["up.zip"]
