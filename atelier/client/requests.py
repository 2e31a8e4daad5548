"""Request bodies as the client sends them. Only the fields a caller sets are sent (the server's
defaults apply to the rest, and it checks every value, answering 422 with the field's name); the
shapes follow the server's request schemas field for field (tests/unit/test_client_contract.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# ---------------------------------------------------------------- generation post-processing


class Upscale(Body):
    """Lanczos up to the job's `size`, then an unsharp mask (`sharpen` 0 turns it off)."""

    op: Literal["upscale"] = "upscale"
    sharpen: float | None = None


class Recolor(Body):
    """Recolour to `color` or to a `palette` of up to 8 colours (#rrggbb, #rgb or CSS names)."""

    op: Literal["recolor"] = "recolor"
    color: str | None = None
    palette: list[str] | None = None
    strength: float | None = None


class Background(Body):
    """Near-white pixels connected to the border become pure white."""

    op: Literal["background"] = "background"
    threshold: int | None = None


class Tryon(Body):
    """Store a try-on preview next to each image."""

    op: Literal["tryon"] = "tryon"
    template: str | None = None


PostprocessOp = Annotated[Upscale | Recolor | Background | Tryon, Field(discriminator="op")]


class FollowReport(Body):
    report: str
    count: int | None = None
    palette: bool | None = None


class GenerationRequest(Body):
    """POST /v1/generation-jobs. `count` or `per_category` for mode `sample`; `image_id` (variations)
    or two `image_ids` (interpolate) for the other modes."""

    model: str | None = None
    count: int | None = None
    per_category: dict[str, int] | None = None
    seed: int | None = None
    truncation: float | None = None
    size: int | None = None
    format: Literal["png", "webp", "jpeg"] | None = None
    quality: int | None = None
    postprocess: list[PostprocessOp] | None = None
    mode: Literal["sample", "variations", "interpolate"] | None = None
    image_id: str | None = None
    image_ids: list[str] | None = None
    strength: float | None = None
    priority: Literal["interactive", "bulk"] | None = None
    webhook_url: str | None = None
    archive: bool | None = None
    chunk_size: int | None = None
    follow_report: FollowReport | None = None

    @field_validator("postprocess", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        # "upscale" is short for Upscale(): sent as {"op": "upscale"}, as the server's schema has it
        return [{"op": item} if isinstance(item, str) else item for item in v] if isinstance(v, list) else v


# ---------------------------------------------------------------- training and schedules


class TrainingRequest(Body):
    """POST /v1/training-jobs."""

    preset: Literal["tiny", "small", "base", "large"] | None = None
    resolution: int | None = None
    steps: int | None = None
    categories: list[str] | None = None
    base_model: str | None = None
    arch: Literal["atelier", "dcgan"] | None = None
    promote: Literal["if_better", "always", "never"] | None = None
    kid_tolerance: float | None = None
    seed: int | None = None
    devices: int | None = None
    webhook_url: str | None = None


class RetrainParams(Body):
    """The `params` of a retrain schedule (PUT /v1/schedules/{name})."""

    kind: Literal["retrain"] | None = None
    min_new_images: int | None = None
    preset: Literal["tiny", "small", "base", "large"] | None = None
    resolution: int | None = None
    steps: int | None = None
    arch: Literal["atelier", "dcgan"] | None = None
    categories: list[str] | None = None
    kid_tolerance: float | None = None
    auto_promote: bool | None = None
    webhook_url: str | None = Field(None, description="notified when a scheduled retrain ends")


class ScheduleRequest(Body):
    cron: str
    enabled: bool = True
    params: dict[str, Any] = {}


# ---------------------------------------------------------------- trend reports and keys


class TrendRequest(Body):
    """POST /v1/trend-reports."""

    period: Literal["week", "month", "season"] | None = None
    categories: list[str] | None = None
    horizon: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    webhook_url: str | None = None


class KeyRequest(Body):
    name: str
    scopes: list[Literal["read", "submit", "catalogue", "admin"]]
    expires_at: datetime | None = None
