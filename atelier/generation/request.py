"""A generation request as clients send it: shape checks only, each 422 naming its field. Checks
against the model (categories, resolution) happen in generation.service.plan, which turns a request into
the job's typed params (core.params.GenerateParams)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from PIL import ImageColor
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from atelier.trends.service import FollowReport
from atelier.tryon import renderer as tryon

MAX_SEED = 2**31 - 1


def _colour(value: str) -> str:
    try:
        r, g, b = ImageColor.getrgb(value.strip())[:3]
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{value!r} is not a colour: use #rrggbb, #rgb or a CSS colour name") from exc
    return f"#{r:02x}{g:02x}{b:02x}"


class UpscaleOp(BaseModel):
    """Lanczos up to the job's `size`, then an unsharp mask (`sharpen` 0 turns it off)."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["upscale"]
    sharpen: float = Field(1.0, ge=0, le=3)


class RecolorOp(BaseModel):
    """Luminance-preserving recolour to `color` or a `palette` of up to 8 colours."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["recolor"]
    color: str | None = None
    palette: list[str] | None = Field(None, min_length=1, max_length=8)
    strength: float = Field(1.0, gt=0, le=1)

    @field_validator("color")
    @classmethod
    def _check_color(cls, v: str | None) -> str | None:
        return None if v is None else _colour(v)

    @field_validator("palette")
    @classmethod
    def _check_palette(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_colour(c) for c in v]

    @model_validator(mode="after")
    def _one_of(self) -> RecolorOp:
        if not self.palette and not self.color:
            raise ValueError("recolor needs `color` or `palette`")
        return self

    def as_op(self) -> dict[str, Any]:
        palette = self.palette or [self.color]
        return {"op": "recolor", "palette": palette, "strength": self.strength}


class BackgroundOp(BaseModel):
    """Near-white pixels connected to the border (every channel >= threshold) become pure white."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["background"]
    threshold: int = Field(225, ge=128, le=254)


class TryonOp(BaseModel):
    """Store a try-on preview next to each image (the garment on a drawn body template), as
    GET /v1/jobs/{id}/images/{index}/tryon renders it; the image itself is unchanged."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["tryon"]
    template: str = Field(tryon.DEFAULT_TEMPLATE, description=f"one of {', '.join(tryon.template_names())}")

    @field_validator("template")
    @classmethod
    def _check_template(cls, v: str) -> str:
        if v not in tryon.template_names():
            raise ValueError(f"unknown template {v!r}; one of {', '.join(tryon.template_names())}")
        return v


PostprocessOp = Annotated[UpscaleOp | RecolorOp | BackgroundOp | TryonOp, Field(discriminator="op")]


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("production", min_length=1, max_length=64, description="`production` or a version id")
    count: int | None = Field(None, ge=1, description="images, spread evenly over the model's categories")
    per_category: dict[str, int] | None = Field(None, description='e.g. {"dress": 500, "skirt": 200}')
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="image i uses seed + i; random if omitted")
    truncation: float | None = Field(
        None,
        gt=0,
        le=1,
        description="default: the model's own, chosen from a measured sweep, per category where it chose so"
        " (1.0 if none); a value given applies to every category",
    )
    size: int | None = Field(
        None, ge=16, le=1024, description="pixels; above the model's resolution upscales"
    )
    format: Literal["png", "webp", "jpeg"] = "png"
    quality: int | None = Field(None, ge=1, le=100, description="webp and jpeg only")
    postprocess: list[PostprocessOp] = Field(default_factory=list, max_length=8)
    mode: Literal["sample", "variations", "interpolate"] = "sample"
    image_id: str | None = Field(None, description="variations: the '<job id>:<index>' to vary")
    image_ids: list[str] | None = Field(None, description="interpolate: two '<job id>:<index>'")
    strength: float = Field(0.3, gt=0, le=2, description="variations: how far from the source")
    priority: Literal["interactive", "bulk"] | None = None
    webhook_url: HttpUrl | None = None
    archive: bool = False
    chunk_size: int | None = Field(None, ge=8, le=2000, description="images per chunk task (advanced)")
    follow_report: FollowReport | None = Field(
        None,
        description="per_category from a trend report's forecast mix and/or recolour to its rising palette",
    )

    @field_validator("format", mode="before")
    @classmethod
    def _jpg(cls, v: Any) -> Any:
        return (
            "jpeg" if isinstance(v, str) and v.lower() == "jpg" else (v.lower() if isinstance(v, str) else v)
        )

    @field_validator("postprocess", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        # "upscale" is short for {"op": "upscale"}
        return [{"op": item} if isinstance(item, str) else item for item in v] if isinstance(v, list) else v

    @field_validator("per_category")
    @classmethod
    def _counts(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("per_category needs at least one category")
        for name, n in v.items():
            if n < 0:
                raise ValueError(f"count for {name!r} must not be negative, got {n}")
        normalized: dict[str, int] = {}
        for name, n in v.items():
            category = name.strip().lower()
            if category in normalized:  # "Dress" and "dress ": which count was meant?
                raise ValueError(f"category {category!r} is listed twice (names are case- and space-blind)")
            normalized[category] = n
        return normalized

    @field_validator("postprocess")
    @classmethod
    def _one_tryon(cls, v: list) -> list:
        if sum(isinstance(op, TryonOp) for op in v) > 1:
            raise ValueError("at most one `tryon` op: one preview per image")
        return v

    @model_validator(mode="after")
    def _follow_or_counts(self) -> GenerationRequest:
        if self.follow_report and self.follow_report.count and (self.count or self.per_category):
            raise ValueError("follow_report.count replaces `count` and `per_category`: send one of them")
        return self

    def request_hash(self) -> str:
        """What an Idempotency-Key repeat must match: the request as sent, before defaults are drawn."""
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def postprocess_ops(self) -> list[dict[str, Any]]:
        return [op.as_op() if isinstance(op, RecolorOp) else op.model_dump() for op in self.postprocess]
