"""Validation of uploaded catalogue photos with Pillow.

A photo is accepted when it is a JPEG, PNG or WebP that decodes fully, within the size and pixel
limits; Pillow is only ever asked to decode those three formats. What is stored carries no metadata:

    the file's segments/chunks are all structural (atelier.catalogue.metadata.is_bare) ── stored byte for byte
    anything else (EXIF, XMP, IPTC, JPEG comments, PNG text, ICC, trailing bytes) ── re-encoded from the
        pixels alone: EXIF orientation applied, an ICC profile converted to sRGB, nothing else kept
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from atelier.catalogue import metadata

FORMATS = {"JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"), "WEBP": ("webp", "image/webp")}


class RejectedImage(ValueError):
    """The reason names what is wrong with the file, for the `rejected` list of an upload."""


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    sha256: str
    format: str  # JPEG / PNG / WEBP
    width: int
    height: int

    @property
    def extension(self) -> str:
        return FORMATS[self.format][0]

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][1]


def _signature(data: bytes) -> str | None:
    """The format a file's first bytes claim: a cut-short header then reads as corrupt, not as no image."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError as exc:
        claimed = _signature(data)
        if claimed:
            raise RejectedImage(
                f"corrupt image: the file starts as a {claimed} but its header is damaged or cut short"
            ) from exc
        raise RejectedImage("not an image: the file is not a JPEG, PNG or WebP") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise RejectedImage(f"decompression bomb: {exc} (ATELIER_MAX_IMAGE_PIXELS)") from exc
    except Exception as exc:  # a header Pillow recognises but cannot parse
        raise RejectedImage(f"corrupt image: {exc}") from exc


def check_shape(width: int, height: int, *, max_pixels: int, max_aspect: float) -> None:
    """Refuse, from the header alone, what would cost too much to decode or to pad to a square."""
    if width * height > max_pixels:
        raise RejectedImage(
            f"decompression bomb: {width}x{height} = {width * height} pixels, the limit is {max_pixels} "
            "(ATELIER_MAX_IMAGE_PIXELS)"
        )
    if min(width, height) > 0 and max(width, height) > max_aspect * min(width, height):
        raise RejectedImage(
            f"aspect ratio too extreme: {width}x{height}, the longer side may be at most {max_aspect:g} "
            "times the shorter (ATELIER_MAX_ASPECT_RATIO)"
        )


def validate_image(
    data: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float = float("inf")
) -> CleanImage:
    if len(data) == 0:
        raise RejectedImage("empty file")
    if len(data) > max_bytes:
        raise RejectedImage(
            f"file too large: {len(data)} bytes, the limit is {max_bytes} (ATELIER_MAX_UPLOAD_BYTES)"
        )
    img = _open(data)
    if img.format not in FORMATS:
        raise RejectedImage(f"unsupported format {img.format}: send JPEG, PNG or WebP")
    width, height = img.size
    # Checked from the header, before any pixel is decoded: a bomb never reaches memory.
    check_shape(width, height, max_pixels=max_pixels, max_aspect=max_aspect)
    if width < 16 or height < 16:
        raise RejectedImage(f"image too small: {width}x{height}, at least 16x16 is needed")
    fmt = img.format
    try:
        img.load()  # truncated or corrupt data surfaces here
        clean = data if metadata.is_bare(data, fmt) else _reencode_without_metadata(img, fmt)
    except Exception as exc:
        raise RejectedImage(f"corrupt image: {exc}") from exc
    if clean is not data:
        width, height = Image.open(io.BytesIO(clean)).size
    return CleanImage(clean, hashlib.sha256(clean).hexdigest(), fmt, width, height)


def _to_srgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return img
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
    except Exception:  # a broken profile: keep the pixels as they are rather than refuse the photo
        return img


def _reencode_without_metadata(img: Image.Image, fmt: str) -> bytes:
    upright = _to_srgb(ImageOps.exif_transpose(img))  # applies the orientation
    if upright.mode == "P":
        upright = upright.convert("RGBA" if "transparency" in upright.info else "RGB")
    # Pillow writes some of `info` back (JPEG comments, XMP): start the saved image from pixels only
    upright = upright.copy()
    upright.info = {}
    out = io.BytesIO()
    if fmt == "JPEG":
        if upright.mode not in ("RGB", "L", "CMYK"):
            upright = upright.convert("RGB")
        upright.save(out, "JPEG", quality=95, subsampling=0)
    elif fmt == "WEBP":
        if upright.mode not in ("RGB", "RGBA"):
            upright = upright.convert("RGBA" if "A" in upright.getbands() else "RGB")
        upright.save(out, "WEBP", quality=95, exif=b"", xmp=b"")
    else:
        upright.save(out, "PNG", compress_level=6)
    return out.getvalue()


def pad_to_square(img: Image.Image, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Pad (never crop) so the whole garment stays in frame."""
    img = img.convert("RGB")
    w, h = img.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def fit_square(img: Image.Image, size: int, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The photo resized so its longer side is `size`, centred on a `size` square (never cropped).

    Resizing before padding keeps the canvas at size^2 whatever the photo's shape: padding first would
    allocate max(w, h)^2 pixels, 30 GB for a 100000x400 strip."""
    img = img.convert("RGB")
    w, h = img.size
    scale = size / max(w, h)
    fitted = img.resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return canvas


def prepare_for_training(
    data: bytes, size: int, *, max_pixels: int = 40_000_000, max_aspect: float = 10.0
) -> bytes:
    """Upright, square, resized with a Lanczos filter, as PNG: the preprocessed catalogue photo.

    The shape is checked from the header first (a photo stored before a limit was lowered, or through
    a path that skipped it): RejectedImage, never an allocation the worker cannot survive."""
    img = _open(data)
    check_shape(*img.size, max_pixels=max_pixels, max_aspect=max_aspect)
    img.draft("RGB", (size * 2, size * 2))  # a JPEG decodes at a fraction of its size for free
    square = fit_square(ImageOps.exif_transpose(img), size)
    out = io.BytesIO()
    square.save(out, "PNG", compress_level=3)
    return out.getvalue()
