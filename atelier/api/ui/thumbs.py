"""Thumbnails of generated images, made on first view and kept in S3 next to nothing else.

    thumbs/<job id>/<index>-<size>.webp     a WebP of at most ATELIER_THUMB_SIZE px per side

The generation worker never makes them: a job of 100,000 images is mostly never looked at, and a
thumbnail is a few kilobytes made in milliseconds when someone does look. The first view fetches the
original, resizes it with Pillow and stores the result; later views find it (an in-process set
remembers which exist, so a warm page costs no S3 round trip) and are redirected to a presigned URL.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image

from atelier.core.storage import ObjectStore

_KNOWN_LIMIT = 200_000
_known: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def thumb_key(job_id: str, index: int, size: int) -> str:
    return f"thumbs/{job_id}/{index}-{size}.webp"


def make_thumbnail(data: bytes, size: int) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale straight away
        img = img.convert("RGB")
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "WEBP", quality=80, method=4)
        return out.getvalue()


def ensure_thumbnail(store: ObjectStore, *, job_id: str, index: int, source_key: str, size: int) -> str:
    """The thumbnail's key, made now when it does not exist yet. Idempotent: two concurrent first
    views write the same bytes to the same key."""
    key = thumb_key(job_id, index, size)
    with _lock:
        if key in _known:
            _known.move_to_end(key)
            return key
    if not store.exists(key):
        store.put(key, make_thumbnail(store.get(source_key), size), content_type="image/webp")
    with _lock:
        _known[key] = None
        while len(_known) > _KNOWN_LIMIT:
            _known.popitem(last=False)
    return key
