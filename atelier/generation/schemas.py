"""Response bodies of generation jobs; the request body is atelier.generation.request.GenerationRequest."""

from __future__ import annotations

from pydantic import BaseModel

from atelier.core.models import GeneratedImage
from atelier.generation.request import GenerationRequest

__all__ = ["GenerationRequest", "ImageOut", "ImagePage"]


class ImageOut(BaseModel):
    id: str
    index: int
    seed: int
    category: str
    key: str
    url: str
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int
    tryon_url: str | None = None  # the stored try-on preview (a `tryon` post-process op), presigned

    @classmethod
    def of(cls, row: GeneratedImage, url: str, tryon_url: str | None = None) -> ImageOut:
        return cls(
            id=f"{row.job_id}:{row.index}",
            index=row.index,
            seed=row.seed,
            category=row.category,
            key=row.key,
            url=url,
            sha256=row.sha256,
            width=row.width,
            height=row.height,
            format=row.format,
            size_bytes=row.size_bytes,
            tryon_url=tryon_url,
        )


class ImagePage(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None
