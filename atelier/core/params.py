"""The typed params of each job kind: validated once when the job is created, stored as is in
`jobs.params`, and read back with `model_validate` wherever they are used (workers, webhooks, API).

    ingest     IngestParams      the catalogue photos to prepare, or a data set ZIP to import
    train      TrainParams       the request, plus what submit resolved (resolution, base, snapshot)
    generate   GenerateParams    the request checked against its model (atelier.generation.service.plan)
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PresetName = Literal["tiny", "small", "base", "large"]
ArchName = Literal["atelier", "dcgan"]
Mode = Literal["sample", "variations", "interpolate"]
Priority = Literal["interactive", "bulk"]
ImageFormat = Literal["png", "webp", "jpeg"]


class _Params(BaseModel):
    # unknown keys are kept: a row written by a newer version still loads in an older worker
    model_config = ConfigDict(extra="allow")


class ImportSource(_Params):
    """A data set uploaded as one ZIP in a known layout, read by the ingest worker."""

    format: Literal["deepfashion"] = "deepfashion"
    archive_key: str  # the ZIP in S3, deleted once the import succeeded
    root: str = ""  # the folder inside the ZIP that holds the layout
    mapping: dict[str, str | None] | None = None  # None: the shipped mapping
    partitions: list[str] | None = None
    crop: bool = True
    captured_at: datetime | None = None


class IngestParams(_Params):
    image_ids: list[str] = Field(default_factory=list)
    source: ImportSource | None = None  # an import: the photos come from this archive
    webhook_url: str | None = None  # notified when the job ends (atelier.webhooks), as for every kind


class TrainParams(_Params):
    preset: PresetName
    resolution: int
    steps: int
    categories: list[str] | None = None
    base_model: str | None = None
    arch: ArchName = "atelier"
    promote: Literal["if_better", "always", "never"] = "if_better"
    kid_tolerance: float = 0.0
    seed: int = 0
    devices: int = 1  # torch.distributed ranks per segment (atelier.gan.launch)
    snapshot_id: str
    class_names: list[str]
    retrain: bool = False
    webhook_url: str | None = None


class GenerateSource(_Params):
    """Where a variations or interpolation job starts: the source images' seeds and category."""

    category: str
    seed: int | None = None
    seeds: list[int] | None = None
    image_id: str | None = None
    image_ids: list[str] | None = None
    strength: float = 0.3


class GenerateParams(_Params):
    mode: Mode = "sample"
    model: str
    model_version: str
    resolution: int
    count: int
    per_category: list[tuple[str, int]]
    seed: int
    truncation: float | None = None  # None: the model's stored default
    size: int
    format: ImageFormat = "png"
    quality: int | None = None
    postprocess: list[dict] = Field(default_factory=list)
    priority: Priority = "bulk"
    webhook_url: str | None = None
    archive: bool = False
    chunk_size: int
    source: GenerateSource | None = None

    def categories_for(self, start: int, stop: int) -> list[str]:
        """The category of each image index in [start, stop): per-category blocks in request order."""
        out: list[str] = []
        offset = 0
        for name, n in self.per_category:
            lo, hi = max(start, offset), min(stop, offset + n)
            out += [name] * max(0, hi - lo)
            offset += n
        return out

    def image_seed(self, index: int) -> int:
        if self.mode == "sample":
            return self.seed + index
        assert self.source is not None
        return self.source.seed if self.source.seed is not None else (self.source.seeds or [0])[0]
