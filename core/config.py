"""Settings: one validated object read from ATELIER_* environment variables.

Every knob of the system lives here so that `atelier up`, docker-compose and the tests configure the
same fields. `get_settings()` is cached per process; tests and the stack launcher change the environment
and call `get_settings.cache_clear()`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEV_S3_SECRET = "atelier-dev-secret"
_DEV_WEBHOOK_SECRET = "atelier-dev-webhook-secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore")

    env: Literal["development", "production"] = "development"

    database_url: str = "sqlite:///.atelier/atelier.db"
    broker_url: str = "redis://127.0.0.1:6379/0"

    s3_endpoint_url: str | None = "http://127.0.0.1:8333"
    s3_access_key: str = "atelier"
    s3_secret_key: str = _DEV_S3_SECRET
    s3_region: str = "us-east-1"
    s3_bucket: str = "atelier"
    presign_expires_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)

    # Upload limits: a single photo, a whole request, and Pillow's decompression-bomb guard.
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=10_000)
    max_zip_members: int = Field(20_000, ge=1)
    prepared_size: int = Field(256, ge=16, le=1024)

    # Reliability: how often a running task heartbeats, when a heartbeat counts as stale, how many
    # deliveries a job gets before it fails, and when a queued job's message is presumed lost.
    heartbeat_seconds: float = Field(5.0, gt=0)
    stale_after_seconds: float = Field(30.0, gt=0)
    max_deliveries: int = Field(4, ge=1)
    resend_after_seconds: float = Field(120.0, gt=0)
    reconcile_every_seconds: float = Field(10.0, gt=0)
    schedule_tick_seconds: float = Field(30.0, gt=0)
    task_soft_time_limit: int = Field(900, ge=10)
    task_time_limit: int = Field(960, ge=10)
    broker_visibility_timeout: int = Field(3600, ge=60)

    # Training: segment length (a killed worker costs at most this), checkpoints kept per job, and the
    # size of the evaluation that every new model version gets.
    train_segment_seconds: float = Field(120.0, gt=0)
    keep_checkpoints: int = Field(3, ge=1)
    judge_seconds: float = Field(60.0, gt=0)
    eval_per_class: int = Field(50, ge=1)
    eval_max_real: int = Field(2000, ge=10)

    webhook_secret: str = _DEV_WEBHOOK_SECRET
    max_generation_count: int = Field(100_000, ge=1)
    # Promotion gate: a candidate may be worse than production by this many standard errors of the
    # difference (KID, GAN-test, recall) before it is refused; below that the two are not told apart.
    promotion_sigmas: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if self.task_time_limit <= self.task_soft_time_limit:
            raise ValueError("ATELIER_TASK_TIME_LIMIT must be greater than ATELIER_TASK_SOFT_TIME_LIMIT")
        if self.task_time_limit >= self.broker_visibility_timeout:
            raise ValueError("ATELIER_TASK_TIME_LIMIT must stay below ATELIER_BROKER_VISIBILITY_TIMEOUT")
        if self.env == "production":
            if self.s3_secret_key == _DEV_S3_SECRET:
                raise ValueError("ATELIER_S3_SECRET_KEY must be set in production")
            if self.webhook_secret == _DEV_WEBHOOK_SECRET:
                raise ValueError("ATELIER_WEBHOOK_SECRET must be set in production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
