"""A procedurally drawn mini-catalogue: simple garment silhouettes with random colours and patterns.

Used by `atelier demo` and the tests (factories over checked-in binaries): `draw_garment("dress", rng)`
returns a PIL image, `make_catalogue(n_per_category, categories)` a list of (category, filename, bytes).
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

CATEGORIES = ("dress", "t-shirt", "pants", "skirt", "hat", "shoes")

# Silhouettes as polygons on a 100x100 canvas (x, y); scaled to the image size when drawn.
SHAPES: dict[str, list[list[tuple[float, float]]]] = {
    "dress": [[(38, 10), (62, 10), (66, 35), (84, 92), (16, 92), (34, 35)]],
    "t-shirt": [
        [
            (30, 15),
            (42, 12),
            (58, 12),
            (70, 15),
            (90, 32),
            (80, 42),
            (72, 36),
            (72, 88),
            (28, 88),
            (28, 36),
            (20, 42),
            (10, 32),
        ]
    ],
    "pants": [[(30, 10), (70, 10), (76, 92), (56, 92), (50, 40), (44, 92), (24, 92)]],
    "skirt": [[(34, 25), (66, 25), (84, 80), (16, 80)]],
    "hat": [[(10, 66), (90, 66), (90, 74), (10, 74)], [(28, 66), (32, 32), (50, 26), (68, 32), (72, 66)]],
    "shoes": [[(14, 58), (44, 50), (60, 58), (88, 64), (90, 76), (14, 76)]],
}


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(20, 235), rng.randint(20, 235), rng.randint(20, 235))


def draw_garment(category: str, rng: random.Random, size: int = 96) -> Image.Image:
    if category not in SHAPES:
        raise ValueError(f"no drawing for category {category!r}; known: {', '.join(SHAPES)}")
    background = (rng.randint(225, 255),) * 3
    img = Image.new("RGB", (size, size), background)
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    jitter = rng.uniform(-4, 4)
    scale = size / 100 * rng.uniform(0.9, 1.05)
    for poly in SHAPES[category]:
        mdraw.polygon([((x + jitter) * scale, (y + jitter) * scale) for x, y in poly], fill=255)
    base = _colour(rng)
    fabric = Image.new("RGB", (size, size), base)
    fdraw = ImageDraw.Draw(fabric)
    pattern = rng.choice(("plain", "stripes", "dots", "checks"))
    accent = _colour(rng)
    step = rng.randint(6, 14) * size // 96 or 4
    if pattern == "stripes":
        for y in range(0, size, step):
            fdraw.rectangle([0, y, size, y + step // 3], fill=accent)
    elif pattern == "dots":
        for y in range(0, size, step):
            for x in range((y // step % 2) * step // 2, size, step):
                fdraw.ellipse([x, y, x + step // 3, y + step // 3], fill=accent)
    elif pattern == "checks":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2:
                    fdraw.rectangle([x, y, x + step, y + step], fill=accent)
    img.paste(fabric, (0, 0), mask)
    return img


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, quality=92) if fmt == "JPEG" else img.save(out, fmt)
    return out.getvalue()


def make_catalogue(
    n_per_category: int, categories: tuple[str, ...] = CATEGORIES, *, seed: int = 0, size: int = 96
) -> list[tuple[str, str, bytes]]:
    rng = random.Random(seed)
    items = []
    for category in categories:
        for i in range(n_per_category):
            items.append(
                (category, f"{category}-{seed}-{i:04d}.jpg", encode(draw_garment(category, rng, size)))
            )
    return items


def catalogue_zip(items: list[tuple[str, str, bytes]]) -> bytes:
    """A ZIP of category folders, as `POST /v1/catalogue/images` takes it."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for category, filename, data in items:
            archive.writestr(f"{category}/{filename}", data)
    return out.getvalue()


# DeepFashion category names (a few of its 50) that the drawn garments stand in for
DEEPFASHION_NAMES = {"dress": "Dress", "t-shirt": "Tee", "pants": "Jeans", "skirt": "Skirt"}


def write_deepfashion_layout(root, n_per_category: int = 3, *, seed: int = 0) -> list[str]:  # noqa: ANN001
    """Draw a small data set in DeepFashion's Category and Attribute Prediction layout under `root`:
    photos on a larger canvas (so the bounding boxes matter), the category, partition and box lists.
    Returns the image paths in annotation order."""
    from pathlib import Path

    root = Path(root)
    rng = random.Random(seed)
    cloth = [
        "Anorak 1",
        *(f"{name} {2 if name in ('Jeans', 'Skirt') else 1}" for name in DEEPFASHION_NAMES.values()),
    ]
    images, boxes, parts = [], [], []
    for category, name in DEEPFASHION_NAMES.items():
        label = cloth.index(f"{name} {2 if name in ('Jeans', 'Skirt') else 1}") + 1
        for i in range(n_per_category):
            rel = f"img/Drawn_{name}_{i}/img_{i + 1:08d}.jpg"
            canvas = Image.new("RGB", (200, 240), (250, 250, 250))
            x, y = rng.randint(10, 90), rng.randint(10, 130)
            canvas.paste(draw_garment(category, rng, 96), (x, y))
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(encode(canvas))
            images.append((rel, label))
            boxes.append((rel, x, y, x + 96, y + 96))
            parts.append((rel, ("train", "val", "test")[i % 3]))
    (root / "Anno").mkdir(parents=True, exist_ok=True)
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    (root / "Anno/list_category_cloth.txt").write_text(
        f"{len(cloth)}\ncategory_name  category_type\n" + "".join(f"{c}\n" for c in cloth)
    )
    (root / "Anno/list_category_img.txt").write_text(
        f"{len(images)}\nimage_name  category_label\n" + "".join(f"{r:<60}{lab}\n" for r, lab in images)
    )
    (root / "Anno/list_bbox.txt").write_text(
        f"{len(boxes)}\nimage_name  x_1  y_1  x_2  y_2\n"
        + "".join(f"{r} {a:03d} {b:03d} {c:03d} {d:03d}\n" for r, a, b, c, d in boxes)
    )
    (root / "Eval/list_eval_partition.txt").write_text(
        f"{len(parts)}\nimage_name  evaluation_status\n" + "".join(f"{r} {p}\n" for r, p in parts)
    )
    return [r for r, _ in images]


def zip_folder(root, prefix: str = "") -> bytes:  # noqa: ANN001
    """Every file under `root` in a DEFLATED ZIP, named `prefix` + its path under root (a data set
    layout such as write_deepfashion_layout's, as POST /v1/catalogue/imports takes it)."""
    import zipfile
    from pathlib import Path

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(root).as_posix())
    return out.getvalue()
