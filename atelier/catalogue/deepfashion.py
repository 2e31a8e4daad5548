"""Reading DeepFashion's Category and Attribute Prediction layout into catalogue photos.

    DIR/Anno/list_category_cloth.txt   count, header, then `name type` (1-based line = label)
    DIR/Anno/list_category_img.txt     count, header, then `img/.../x.jpg label`
    DIR/Eval/list_eval_partition.txt   optional: `img/.../x.jpg train|val|test`
    DIR/Anno/list_bbox.txt             optional: `img/.../x.jpg x1 y1 x2 y2`, to crop the garment

Categories map to catalogue categories through a JSON mapping file (`name -> category`, null skips);
the default one (core/data/deepfashion-mapping.json) covers the ten catalogue categories that
DeepFashion has photos of. A malformed annotation line is one `Problem` with its file and line number;
the rest of the file is still read. This module only reads and crops: the photos are ingested by the
catalogue's ingestion (catalogue.service.ingest_uploads: over HTTP from the CLI, or in the worker of an
import job, catalogue.imports), with its validation, dedupe and metadata stripping. `find_root` and
`wanted_member` locate the layout inside a ZIP.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps

from atelier.catalogue.archives import IMAGE_SUFFIXES
from atelier.catalogue.service import normalize_category

DEFAULT_MAPPING_FILE = Path(__file__).parent / "data" / "deepfashion-mapping.json"
CLOTH = Path("Anno/list_category_cloth.txt")
IMAGES = Path("Anno/list_category_img.txt")
PARTITION = Path("Eval/list_eval_partition.txt")
BBOX = Path("Anno/list_bbox.txt")
PARTITIONS = ("train", "val", "test")
CROP_MARGIN = 0.06  # of the box's size on each side: the garment's outline stays inside the crop


@dataclass(frozen=True)
class Entry:
    image: str  # path relative to DIR, as the annotation names it
    source_category: str
    category: str  # the catalogue category
    line: int
    bbox: tuple[int, int, int, int] | None = None
    partition: str | None = None


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Annotations:
    entries: list[Entry]
    problems: list[Problem]
    unmapped: dict[str, int]  # DeepFashion category -> photos skipped because the mapping has none


def load_mapping(path: Path | None = None) -> dict[str, str | None]:
    """`name -> catalogue category or None`; ValueError naming the file and the bad entry."""
    path = path or DEFAULT_MAPPING_FILE
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"mapping file {path}: {exc}") from exc
    return parse_mapping(raw, source=f"mapping file {path}")


def parse_mapping(raw: object, *, source: str = "mapping") -> dict[str, str | None]:
    """A decoded mapping (`name -> catalogue category or None`, keys starting with `_` ignored),
    checked; ValueError naming `source` and the bad entry."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object of name -> category")
    mapping: dict[str, str | None] = {}
    for name, category in raw.items():
        if name.startswith("_"):
            continue
        try:
            mapping[name] = None if category is None else normalize_category(category)
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{source}: {name!r}: {exc}") from exc
    return mapping


def find_root(names: list[str]) -> str:
    """The folder of a ZIP's member names that holds the layout ("" or "DeepFashion/", say): the
    shallowest one with both required annotation files. ValueError naming what is missing."""
    cloth, images = CLOTH.as_posix(), IMAGES.as_posix()
    present = set(names)
    roots = sorted(
        (n[: -len(cloth)] for n in names if n == cloth or n.endswith("/" + cloth)), key=lambda r: (len(r), r)
    )
    for root in roots:
        if root + images in present:
            return root
    raise ValueError(f"the ZIP has no {cloth} and {images} side by side: not a DeepFashion Category layout")


def wanted_member(root: str):  # noqa: ANN201 - a predicate on a ZIP member's path
    """Which members of a ZIP with the layout at `root` an import reads: the annotation files, photos."""
    annotations = {root + rel.as_posix() for rel in (CLOTH, IMAGES, PARTITION, BBOX)}

    def wanted(path: PurePosixPath) -> bool:
        name = path.as_posix()
        if name in annotations:
            return True
        return name.startswith(root) and path.suffix.lower() in IMAGE_SUFFIXES

    return wanted


def _rows(root: Path, rel: Path, problems: list[Problem], width: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the data lines: a count line, a header line, then `width` fields each."""
    lines = (root / rel).read_text(errors="replace").splitlines()
    rows = []
    for number, text in enumerate(lines[2:], start=3):
        if not text.strip():
            continue
        fields = text.split()
        if len(fields) != width:
            problems.append(Problem(str(rel), number, f"expected {width} fields, found {len(fields)}"))
            continue
        rows.append((number, fields))
    if lines and lines[0].strip().isdigit() and int(lines[0]) != len(rows):
        problems.append(Problem(str(rel), 1, f"says {int(lines[0])} entries, {len(rows)} are readable"))
    return rows


def read_annotations(
    root: Path, *, mapping: dict[str, str | None], partitions: tuple[str, ...] | None = None
) -> Annotations:
    root = Path(root)
    for required in (CLOTH, IMAGES):
        if not (root / required).is_file():
            raise FileNotFoundError(f"{root / required} is missing: not a DeepFashion Category layout")
    problems: list[Problem] = []
    names = [fields[0] for _, fields in _rows(root, CLOTH, problems, 2)]

    split: dict[str, str] = {}
    if (root / PARTITION).is_file():
        for number, (image, status) in _rows(root, PARTITION, problems, 2):
            if status not in PARTITIONS:
                problems.append(Problem(str(PARTITION), number, f"unknown partition {status!r}"))
                continue
            split[image] = status
    elif partitions:
        raise FileNotFoundError(f"{root / PARTITION} is missing: cannot select partitions {partitions}")

    boxes: dict[str, tuple[int, int, int, int]] = {}
    if (root / BBOX).is_file():
        for number, (image, *coords) in _rows(root, BBOX, problems, 5):
            try:
                x1, y1, x2, y2 = (int(c) for c in coords)
            except ValueError:
                problems.append(Problem(str(BBOX), number, f"box {' '.join(coords)!r} is not four integers"))
                continue
            if not (0 <= x1 < x2 and 0 <= y1 < y2):
                problems.append(Problem(str(BBOX), number, f"box ({x1}, {y1}, {x2}, {y2}) is empty"))
                continue
            boxes[image] = (x1, y1, x2, y2)

    entries: list[Entry] = []
    unmapped: dict[str, int] = {}
    for number, (image, label) in _rows(root, IMAGES, problems, 2):
        if not label.isdigit() or not 1 <= int(label) <= len(names):
            problems.append(Problem(str(IMAGES), number, f"category label {label!r} is not 1..{len(names)}"))
            continue
        if _unsafe_path(image):
            problems.append(Problem(str(IMAGES), number, f"unsafe image path {image!r}"))
            continue
        source = names[int(label) - 1]
        if partitions and split.get(image) not in partitions:
            continue
        category = mapping.get(source)
        if category is None:
            unmapped[source] = unmapped.get(source, 0) + 1
            continue
        entries.append(Entry(image, source, category, number, boxes.get(image), split.get(image)))
    return Annotations(entries, sorted(problems, key=lambda p: (p.file, p.line)), unmapped)


def _unsafe_path(image: str) -> bool:
    parts = Path(image).parts
    return image.startswith("/") or ".." in parts


DECODED_FORMATS = ["JPEG", "PNG"]


def photo_bytes(root: Path, entry: Entry, *, crop: bool, max_pixels: int | None = None) -> tuple[str, bytes]:
    """(upload filename, bytes) of one photo, cropped to its box (with a margin) when asked.

    The filename keeps DeepFashion's folder, so two `img_00000001.jpg` of different items stay apart.
    A file that does not decode, or has more than `max_pixels`, is returned whole and uncropped: the
    catalogue's validation rejects it with its reason. OSError when the file cannot be read."""
    path = Path(root) / entry.image
    data = path.read_bytes()
    name = "__".join(Path(entry.image).parts[-2:])
    if not (crop and entry.bbox):
        return name, data
    try:
        # DeepFashion ships JPEGs (and PNG masks): no other decoder of Pillow's may see an imported file
        with Image.open(io.BytesIO(data), formats=DECODED_FORMATS) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                return name, data
            img = ImageOps.exif_transpose(img).convert("RGB")
            x1, y1, x2, y2 = entry.bbox
            mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
            box = (
                max(0, int(x1 - mx)),
                max(0, int(y1 - my)),
                min(img.width, int(x2 + mx)),
                min(img.height, int(y2 + my)),
            )
            if box[2] - box[0] < 16 or box[3] - box[1] < 16:
                return name, data  # a box that misses the photo: send the whole photo, the API judges it
            out = io.BytesIO()
            img.crop(box).save(out, "JPEG", quality=95)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return name, data  # not a photo Pillow can read: validation gives the reason
    return Path(name).with_suffix(".jpg").as_posix(), out.getvalue()
