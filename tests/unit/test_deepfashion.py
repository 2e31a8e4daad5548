"""DeepFashion's Category and Attribute Prediction layout: categories mapped, boxes cropped, partitions
selected, and every malformed annotation line reported with its file and line without stopping."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from atelier.catalogue import deepfashion
from atelier.catalogue.synthetic import write_deepfashion_layout, zip_folder


def append(path, text: str) -> None:  # noqa: ANN001
    with path.open("a") as f:
        f.write(text)


def test_default_mapping_covers_the_catalogue_and_reads_a_drawn_layout(tmp_path):
    mapping = deepfashion.load_mapping()
    assert len(mapping) == 50
    assert set(filter(None, mapping.values())) == {
        "dress", "longsleeve", "outwear", "pants", "shirt", "shorts", "skirt", "t-shirt",
    }  # fmt: skip
    images = write_deepfashion_layout(tmp_path, 3)
    notes = deepfashion.read_annotations(tmp_path, mapping=mapping)
    assert notes.problems == []
    assert [e.image for e in notes.entries] == images
    assert {e.category for e in notes.entries} == {"dress", "t-shirt", "pants", "skirt"}
    assert all(e.bbox and e.partition for e in notes.entries)
    train = deepfashion.read_annotations(tmp_path, mapping=mapping, partitions=("train",))
    assert len(train.entries) == 4 and {e.partition for e in train.entries} == {"train"}


def test_malformed_lines_are_reported_per_line_and_the_rest_is_read(tmp_path):
    write_deepfashion_layout(tmp_path, 2)
    append(tmp_path / "Anno/list_category_img.txt", "img/x/broken.jpg\nimg/x/a.jpg 99\n../../etc/passwd 2\n")
    append(tmp_path / "Anno/list_bbox.txt", "img/Drawn_Dress_0/img_00000001.jpg 1 2 x 4\n")
    append(tmp_path / "Eval/list_eval_partition.txt", "img/x/a.jpg holdout\n")
    notes = deepfashion.read_annotations(tmp_path, mapping=deepfashion.load_mapping())
    shown = [str(p) for p in notes.problems]
    assert "Anno/list_category_img.txt:11: expected 2 fields, found 1" in shown
    assert "Anno/list_category_img.txt:12: category label '99' is not 1..5" in shown
    assert "Anno/list_category_img.txt:13: unsafe image path '../../etc/passwd'" in shown
    assert any(s.startswith("Anno/list_bbox.txt:11: box") for s in shown)
    assert "Eval/list_eval_partition.txt:11: unknown partition 'holdout'" in shown
    assert len(notes.entries) == 8  # every well-formed line still counts


def test_mapping_file_renames_and_skips_categories(tmp_path):
    write_deepfashion_layout(tmp_path, 1)
    custom = tmp_path / "mapping.json"
    custom.write_text(json.dumps({"Dress": "gown", "Tee": None}))
    notes = deepfashion.read_annotations(tmp_path, mapping=deepfashion.load_mapping(custom))
    assert [e.category for e in notes.entries] == ["gown"]
    assert notes.unmapped == {"Tee": 1, "Jeans": 1, "Skirt": 1}
    custom.write_text(json.dumps({"Dress": "Not A/Category"}))
    with pytest.raises(ValueError, match="'Dress'"):
        deepfashion.load_mapping(custom)


def test_crop_follows_the_box(tmp_path):
    write_deepfashion_layout(tmp_path, 1)
    entry = deepfashion.read_annotations(tmp_path, mapping=deepfashion.load_mapping()).entries[0]
    name, data = deepfashion.photo_bytes(tmp_path, entry, crop=True)
    assert name == "Drawn_Dress_0__img_00000001.jpg"
    width, height = Image.open(io.BytesIO(data)).size
    assert 96 <= width <= 96 * 1.15 and 96 <= height <= 96 * 1.15  # the box and its margin, not 200x240
    _, whole = deepfashion.photo_bytes(tmp_path, entry, crop=False)
    assert Image.open(io.BytesIO(whole)).size == (200, 240)
    with pytest.raises(FileNotFoundError, match="list_category_cloth"):
        deepfashion.read_annotations(tmp_path / "Anno", mapping={})


def test_an_import_zip_is_checked_from_its_directory_and_extracted_under_the_caps(tmp_path):
    from atelier.catalogue.archives import extract_tree
    from atelier.catalogue.imports import InvalidImport, check_source
    from atelier.core.config import Settings

    images = write_deepfashion_layout(tmp_path / "src", 1)
    data = zip_folder(tmp_path / "src", "DeepFashion/")
    settings = Settings()
    source = check_source(
        fileobj=io.BytesIO(data),
        settings=settings,
        fmt="deepfashion",
        mapping='{"Dress": "gown"}',
        partitions="train",
        crop=True,
        captured_at=None,
    )
    assert source.root == "DeepFashion/" and source.mapping == {"Dress": "gown"}
    assert source.partitions == ["train"]
    out = tmp_path / "out"
    assert (
        extract_tree(
            io.BytesIO(data), out, settings=settings, wanted=deepfashion.wanted_member("DeepFashion/")
        )
        == []
    )
    notes = deepfashion.read_annotations(out / "DeepFashion", mapping=deepfashion.load_mapping())
    assert [e.image for e in notes.entries] == images and notes.problems == []

    def refused(field: str, **changes) -> str:  # noqa: ANN003
        args = dict(fmt="deepfashion", mapping=None, partitions=None, crop=True, captured_at=None)
        with pytest.raises(InvalidImport) as info:
            check_source(
                fileobj=io.BytesIO(changes.pop("data", data)), settings=settings, **{**args, **changes}
            )
        assert info.value.field == field
        return str(info.value)

    assert "list_category_cloth.txt" in refused("file", data=zip_folder(tmp_path / "src" / "img"))
    assert "corrupt ZIP" in refused("file", data=b"PK\x03\x04 not really")
    assert "'Dress'" in refused("mapping", mapping='{"Dress": "Not A/Category"}')
    assert "JSON object" in refused("mapping", mapping="[1, 2]")
    assert "'holdout'" in refused("partitions", partitions="train,holdout")
    small = Settings(max_zip_members=3)
    with pytest.raises(InvalidImport, match="ATELIER_MAX_ZIP_MEMBERS"):
        check_source(fileobj=io.BytesIO(data), settings=small, fmt="deepfashion", mapping=None,
                     partitions=None, crop=True, captured_at=None)  # fmt: skip


def test_extract_tree_refuses_unsafe_paths_and_rejects_nested_and_oversized_members(tmp_path):
    from atelier.catalogue.archives import extract_tree
    from atelier.core.config import Settings

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Anno/list_category_cloth.txt", "1\nh\nDress 3\n")
        archive.writestr("img/a/inner.zip", b"PK\x03\x04")
        archive.writestr("img/a/big.jpg", b"x" * 5000)
        archive.writestr("img/a/ok.jpg", b"y" * 100)
        archive.writestr("notes/readme.md", b"never inflated")
    settings = Settings(max_upload_bytes=4096)
    rejected = extract_tree(io.BytesIO(out.getvalue()), tmp_path, settings=settings,
                            wanted=deepfashion.wanted_member(""))  # fmt: skip
    reasons = {r.name: r.reason for r in rejected}
    assert "ATELIER_MAX_UPLOAD_BYTES" in reasons["img/a/big.jpg"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "Anno/list_category_cloth.txt",
        "img/a/ok.jpg",
    ]
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escape.jpg", b"z")
    with pytest.raises(ValueError, match="unsafe path"):
        extract_tree(io.BytesIO(evil.getvalue()), tmp_path / "evil", settings=settings, wanted=lambda p: True)
    assert not (tmp_path / "escape.jpg").exists()
