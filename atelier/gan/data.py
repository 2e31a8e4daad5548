"""Data preparation: photos -> one uint8 tensor per (dataset, resolution).

    bytes (JPEG/PNG/WebP) -> EXIF orientation -> RGB on white -> LANCZOS resize of the longer side
        -> pad to square (never crop) -> uint8 [3, R, R]

Training indexes this tensor directly, so no JPEG is decoded inside the training loop; the whole set
is one ``torch.save`` dict (``images``, ``labels``, optional ``class_names``) that loads with
``weights_only=True`` and round-trips through bytes so it can live in S3.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
PAD_MODES = ("white", "edge")


def _edge_colour(img: Image.Image) -> tuple[int, int, int]:
    # The median of the one-pixel border: the backdrop colour of a product photo, robust to a garment
    # touching one edge.
    w, h = img.size
    border = [img.crop(b) for b in ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h))]
    px = torch.cat([torch.from_numpy(np.asarray(b, dtype=np.int32).reshape(-1, 3)) for b in border])
    return tuple(int(v) for v in px.median(dim=0).values)


def pad_to_square(img: Image.Image, pad: str = "white") -> Image.Image:
    """Centre the image on a square canvas whose side is its longer edge, so nothing is cropped."""
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    w, h = img.size
    if w == h:
        return img
    colour = (255, 255, 255) if pad == "white" else _edge_colour(img)
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def _fit_square(img: Image.Image, resolution: int, pad: str) -> Image.Image:
    """pad_to_square then resize, in the other order: the canvas is resolution^2 whatever the shape
    (padding a 100000x400 strip first would allocate 30 GB)."""
    w, h = img.size
    if w == h:
        return img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    colour = (255, 255, 255) if pad == "white" else _edge_colour(img)
    scale = resolution / max(w, h)
    fitted = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (resolution, resolution), colour)
    canvas.paste(fitted, ((resolution - fitted.width) // 2, (resolution - fitted.height) // 2))
    return canvas


def decode_photo(data: bytes, resolution: int, pad: str = "white") -> torch.Tensor:
    img = Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "WEBP"])
    # A JPEG can be decoded at 1/2, 1/4, 1/8 scale for free; keep at least 2x the target for LANCZOS.
    img.draft("RGB", (resolution * 2, resolution * 2))
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, (255, 255, 255))  # transparent product cut-outs go on white
        bg.paste(img, mask=img.getchannel("A"))
        img = bg
    img = _fit_square(img.convert("RGB"), resolution, pad)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)


def prepare_images(images: Iterable[tuple[bytes, int]], resolution: int, pad: str = "white") -> dict:
    """Decode ``(bytes, label)`` pairs into ``images`` uint8 [N,3,R,R] and ``labels`` int64 [N].

    Undecodable files are skipped (logged); ``source_index`` maps each row back to its input.
    """
    out, labels, kept = [], [], []
    for i, (data, label) in enumerate(images):
        try:
            out.append(decode_photo(data, resolution, pad))
        except Exception as exc:  # a corrupt upload must not sink the whole dataset
            log.warning("skipping image %d: %s", i, exc)
            continue
        labels.append(int(label))
        kept.append(i)
    if out:
        stacked = torch.stack(out).permute(0, 3, 1, 2).contiguous()
    else:
        stacked = torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)
    return dict(
        images=stacked,
        labels=torch.tensor(labels, dtype=torch.int64),
        source_index=torch.tensor(kept, dtype=torch.int64),
    )


def dataset_to_bytes(d: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(d, buf)
    return buf.getvalue()


def dataset_from_bytes(b: bytes) -> dict:
    return torch.load(io.BytesIO(b), weights_only=True)


def load_folder(path: str | Path) -> tuple[list[tuple[bytes, int]], list[str]]:
    """Read ``path/<category>/*.{jpg,png,webp}``; categories are the sorted folder names.

    A folder holding only ``train/`` (the layout of the shared clothing dataset) is read from there.
    """
    root = Path(path)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if [p.name for p in subdirs] == ["train"]:
        root = subdirs[0]
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names, items = [], []
    for folder in subdirs:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        label = len(class_names)
        class_names.append(folder.name)
        items.extend((f.read_bytes(), label) for f in files)
    if not class_names:
        raise ValueError(f"{root} has no category folders with JPEG/PNG/WebP images")
    return items, class_names


def prepare_folder(path: str | Path, resolution: int, pad: str = "white") -> dict:
    items, class_names = load_folder(path)
    d = prepare_images(items, resolution, pad)
    d["class_names"] = class_names
    return d


def images_as_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range G produces."""
    return images_u8.float().div_(127.5).sub_(1.0)
