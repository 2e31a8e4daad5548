"""Settings: one validated object read from ATELIER_* environment variables.

Every knob of the system lives here so that `atelier up`, docker-compose and the tests configure the
same fields. `get_settings()` is cached per process; tests and the stack launcher change the environment
and call `get_settings.cache_clear()`.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEV_S3_SECRET = "atelier-dev-secret"
_DEV_WEBHOOK_SECRET = "atelier-dev-webhook-secret"
# Passwords that an attacker tries first: the compose file's old default, the images' defaults.
_WEAK_PASSWORDS = {"", "atelier", "postgres", "password", "guest", "changeme", "secret"}
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


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
    # A long, thin photo (100000x400) passes the pixel cap but would pad to a max(w,h)^2 square: the
    # longer side may be at most this many times the shorter, checked from the header at upload.
    max_aspect_ratio: float = Field(10.0, ge=1.0)
    # A photo whose preparation failed (or killed its worker) this many times is `rejected`: excluded
    # from training, never retried again.
    max_prepare_attempts: int = Field(3, ge=1)
    # A ZIP's central directory is parsed only when its declared size is within this (20,000 entries
    # with 100-character names take 3 MB): millions of tiny entries would otherwise cost gigabytes of
    # parsed entries before the member cap applies.
    max_zip_directory_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    prepared_size: int = Field(256, ge=16, le=1024)
    # A data set import (POST /v1/catalogue/imports) steps aside after this long and goes on in a new
    # delivery (at the latest after half the task's soft time limit), so a large one never meets it.
    import_segment_seconds: float = Field(300.0, gt=0)

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
    # Per task kind: a 100,000-image ZIP finalize needs far longer than a chunk or a webhook.
    finalize_soft_time_limit: int = Field(3000, ge=10)
    webhook_soft_time_limit: int = Field(60, ge=10)
    control_soft_time_limit: int = Field(120, ge=10)
    # Infrastructure faults (S3, SQL, broker) are retried in place with backoff and jitter for this
    # long, then the unit goes back to its queue; neither uses up its deliveries.
    infra_retry_seconds: float = Field(300.0, gt=0)
    retry_backoff_max_seconds: float = Field(30.0, gt=0)
    broker_socket_timeout: float = Field(5.0, gt=0)
    # A worker idle this long while its queues hold messages has lost its consumer (it happens after a
    # broker restart, see atelier/workers/consumer_watchdog.py) and restarts itself; 0 turns the check off.
    consumer_stuck_seconds: float = Field(30.0, ge=0)
    # A finalize that fails for reasons of its own this many times ends the job `failed`.
    finalize_max_attempts: int = Field(5, ge=1)
    # Largest ZIP a generation job may ask for, checked at submit from count, size and format.
    max_archive_bytes: int = Field(20 * 1024**3, ge=1024)

    # Training: segment length (a killed worker costs at most this), checkpoints kept per job, and the
    # size of the evaluation that every new model version gets.
    train_segment_seconds: float = Field(120.0, gt=0)
    keep_checkpoints: int = Field(3, ge=1)
    # The most torch.distributed ranks (GPUs on a CUDA worker, gloo processes otherwise) one training job
    # may ask for (its `devices`); every rank of a job runs on the one worker host that leases the segment.
    max_training_devices: int = Field(8, ge=1)
    # The judge trains for a number of epochs (a cosine schedule: the same ruler on any machine);
    # judge_seconds only caps its time.
    judge_epochs: int = Field(25, ge=1)
    judge_seconds: float = Field(600.0, gt=0)
    eval_per_class: int = Field(50, ge=1)
    eval_max_real: int = Field(2000, ge=10)
    # Truncations every new model version is evaluated at; the best one that keeps diversity becomes its
    # stored default (gan/metrics.py:truncation_sweep). "1.0" alone: no sweep, the default is 1.
    truncation_sweep: str = "1.0,0.9,0.8,0.7"
    # The sweep's strongest truncation must keep the mean within-category diversity (spread of generated
    # over spread of real photos in the judge's features) at or above this; so must a per-category one.
    truncation_min_diversity: float = Field(0.9, ge=0, le=2)
    # ... and recall at or above this fraction of its value at 1.0, less two standard errors of the
    # difference: 1.0 lets the truncation cost recall only within its noise.
    truncation_recall_keep: float = Field(1.0, ge=0, le=1)

    webhook_secret: str = _DEV_WEBHOOK_SECRET
    max_generation_count: int = Field(100_000, ge=1)
    # Promotion gate: a candidate may be worse than production by this many standard errors of the
    # difference (KID, GAN-test, recall) before it is refused; below that the two are not told apart.
    promotion_sigmas: float = Field(2.0, ge=0)
    # The most a training request or a schedule may add to the KID margin (`kid_tolerance`): beyond
    # it the gate would pass any model, which is an admin's forced promotion by another name.
    max_kid_tolerance: float = Field(0.1, ge=0)
    # And it refuses, whatever production scores, a candidate whose designs are typical rather than
    # varied: mean within-category diversity, or recall against held-out photos as a ratio to the
    # real-vs-real recall, below these (0: off). A first model is promoted regardless (there is nothing
    # better to keep serving). Floors against collapse, set from measured models (GAN_NOTES.md round
    # 9): after 15-60 CPU-minutes at 32 and 64 px the sweep keeps diversity at 0.90-0.94 while
    # recall_ratio is 0.31-0.64; a recall floor of 0.85 refused every one of them, so a nightly retrain
    # could never replace production. A 3-minute run (142 steps) scored 0.03.
    promotion_min_diversity: float = Field(0.85, ge=0, le=2)
    promotion_min_recall: float = Field(0.2, ge=0, le=2)

    # The read path under load. SQL connections per process: the API runs sync routes on anyio's 40
    # threads, so 40 plus a little overflow means a request never waits for a connection while a thread
    # is free. A request that still cannot get one within the pool timeout, or that finds more than
    # api_max_concurrent_requests already in flight, is answered 503 with Retry-After at once instead of
    # queueing for 30 s. A looked-up API key is trusted for api_key_cache_seconds (0: every request
    # reads it): a revoked key stops working within that time.
    db_pool_size: int = Field(40, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_pool_timeout_seconds: float = Field(1.0, gt=0)
    # A database on another host (docs/scaling.md): a connection to a host that was cut off fails after
    # db_network_timeout_seconds instead of the kernel's minutes, and PostgreSQL ends a transaction that
    # a lost host left idle after db_idle_in_transaction_seconds, releasing its row locks (0: off).
    db_network_timeout_seconds: float = Field(15.0, ge=0)
    db_idle_in_transaction_seconds: float = Field(60.0, ge=0)
    api_max_concurrent_requests: int = Field(100, ge=1)
    # Event streams last minutes, so they are outside the request cap above, with a cap of their own
    # per API process (503 + Retry-After past it), besides each key's ATELIER_QUOTA_EVENT_STREAMS.
    api_max_event_streams: int = Field(200, ge=1)
    api_retry_after_seconds: int = Field(1, ge=1)
    api_key_cache_seconds: float = Field(5.0, ge=0)
    # Where the API shares its host's cores with the batch work (the embedded stack), the gpu and cpu
    # workers and the S3 server that stores their images run at this niceness, so that a status poll
    # does not queue behind image encoding for the scheduler's share of a core (0: same priority).
    batch_nice: int = Field(10, ge=0, le=19)
    # Trend reports: the longest forecast, the most photos one report reads (an even sample beyond
    # it), the palette's and the style clustering's number of clusters, and the report's own time
    # limit: measured 10-30 photos/s on a busy 2-core machine before the backdrop model of
    # atelier/imaging/masks.py, which adds ~45 ms a photo, so 6,000 photos need up to ~900 s there.
    trend_soft_time_limit: int = Field(2400, ge=10)
    trend_max_horizon: int = Field(12, ge=1, le=104)
    trend_max_photos: int = Field(6_000, ge=10)
    trend_palette_size: int = Field(8, ge=2, le=24)
    trend_style_clusters: int = Field(6, ge=2, le=24)
    # Hostile input: the JSON body limit (checked before a body is read, like max_request_bytes on the
    # upload route), how many files one upload may carry, and the caps of an archive as a whole.
    max_json_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Gallery form posts (sign-in included) are a few fields: limited before the form is parsed and
    # before the session is looked at, so an anonymous client cannot make the API parse megabytes.
    max_form_body_bytes: int = Field(64 * 1024, ge=1024)
    # After a 413 the API keeps reading (and discarding) the rest of the body for up to this many bytes
    # and seconds before it closes: closing with unread bytes makes the kernel reset the connection,
    # and clients such as urllib, requests and httpx then report the reset instead of the 413.
    oversize_drain_bytes: int = Field(64 * 1024 * 1024, ge=0)
    oversize_drain_seconds: float = Field(10.0, ge=0)
    max_upload_files: int = Field(500, ge=1)
    max_archive_inflated_bytes: int = Field(2 * 1024**3, ge=1024)
    max_archive_ratio: float = Field(100.0, ge=2)

    # Outbound webhooks: comma-separated networks opened to webhooks despite the policy (such as
    # "127.0.0.0/8" for a receiver on the same host), the delivery time-out, and how long the previous
    # per-key signing secret still signs after a rotation.
    webhook_allow_networks: str = ""
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    # The time-out is one total deadline for the attempt (connect, headers and body), not per read.
    # A receiver's answer is read up to this many bytes (its status is what counts), within the
    # attempt's total deadline: a receiver cannot feed a worker an endless or slow-drip response.
    webhook_max_response_bytes: int = Field(64 * 1024, ge=0)
    webhook_secret_overlap_seconds: int = Field(24 * 3600, ge=0)

    # Per-key quotas (429 with Retry-After) and the size of job that may ask for `interactive`.
    quota_images_per_hour: int = Field(200_000, ge=1)
    quota_active_jobs: int = Field(20, ge=1)
    quota_event_streams: int = Field(8, ge=1)
    # trend reports and ingest jobs (uploads and imports) run on the `io` queue that finalize and
    # webhooks share: each key may have this many of them queued or running
    quota_active_trend_jobs: int = Field(4, ge=1)
    quota_active_ingest_jobs: int = Field(20, ge=1)
    interactive_max_images: int = Field(256, ge=1)

    @field_validator("truncation_sweep")
    @classmethod
    def _truncations(cls, v: str) -> str:
        try:
            values = [float(t) for t in v.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"truncation_sweep: {v!r} is not a comma-separated list of numbers") from None
        if not values or any(not 0.0 < t <= 1.0 for t in values):
            raise ValueError(f"truncation_sweep: every value must be in (0, 1], got {v!r}")
        return v

    @property
    def truncation_values(self) -> tuple[float, ...]:
        """The sweep's truncations, 1.0 (the reference) always among them."""
        return tuple(sorted({1.0, *(float(t) for t in self.truncation_sweep.split(",") if t.strip())}))

    @property
    def sweep_limits(self) -> dict:
        """What the sweep's truncation must keep, as gan.metrics.swept_metrics' keywords: every caller
        (gan train, gan eval --sweep, a model version's evaluation) applies the same limits."""
        return {"min_diversity": self.truncation_min_diversity, "recall_keep": self.truncation_recall_keep}

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, v: str) -> str:
        for item in v.split(","):
            if item.strip():
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError as exc:
                    raise ValueError(
                        f"ATELIER_WEBHOOK_ALLOW_NETWORKS: {item.strip()!r} is not a network"
                    ) from exc
        return v

    # Operating it: logs, metrics, the gallery. Presigned URLs are signed for the public endpoint
    # (what a browser or a laptop resolves) when one is set; the API itself talks to s3_endpoint_url.
    s3_public_endpoint_url: str | None = None
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_cache_seconds: float = Field(5.0, ge=0)
    # 0 turns a worker's metrics endpoint off; each worker needs a port of its own on its host.
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    # Signs the gallery's CSRF tokens (sessions themselves are rows, atelier/api/ui/session.py). Every
    # API replica must share it, so production requires it; elsewhere unset means random per process.
    ui_session_secret: str | None = None
    # Behind a TLS-terminating proxy: take the scheme and host from X-Forwarded-Proto/-Host, so that the
    # gallery's cookie is Secure and its sign-in form's Origin matches. Only where the proxy sets them.
    trust_forwarded_headers: bool = False
    ui_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    ui_page_size: int = Field(60, ge=1, le=500)
    thumb_size: int = Field(160, ge=32, le=512)
    # When set, GET /metrics (the API's and each worker's) asks for `Authorization: Bearer <token>`;
    # production requires it. /docs, /redoc and /openapi.json are served outside production, and in
    # production only with public_docs.
    metrics_token: str | None = None
    public_docs: bool = False
    # Where workers write their scratch files (a finalize's manifest and ZIP, an import's archive):
    # a volume of its own in compose, since a 20 GB archive does not fit a container's /tmp. Unset,
    # the system temporary directory.
    work_dir: str | None = None

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if self.task_time_limit <= self.task_soft_time_limit:
            raise ValueError("ATELIER_TASK_TIME_LIMIT must be greater than ATELIER_TASK_SOFT_TIME_LIMIT")
        if self.task_time_limit >= self.broker_visibility_timeout:
            raise ValueError("ATELIER_TASK_TIME_LIMIT must stay below ATELIER_BROKER_VISIBILITY_TIMEOUT")
        limits = ("finalize_soft_time_limit", "webhook_soft_time_limit", "control_soft_time_limit",
                  "trend_soft_time_limit")  # fmt: skip
        for name in limits:
            if getattr(self, name) + 60 >= self.broker_visibility_timeout:
                raise ValueError(
                    f"ATELIER_{name.upper()} + 60 s must stay below ATELIER_BROKER_VISIBILITY_TIMEOUT"
                )
        if self.env == "production":
            if self.s3_secret_key == _DEV_S3_SECRET:
                raise ValueError("ATELIER_S3_SECRET_KEY must be set in production")
            if self.webhook_secret == _DEV_WEBHOOK_SECRET:
                raise ValueError("ATELIER_WEBHOOK_SECRET must be set in production")
            if not self.ui_session_secret or len(self.ui_session_secret) < 32:
                raise ValueError(
                    "ATELIER_UI_SESSION_SECRET (32 characters or more) must be set in production"
                )
            self._refuse_open_production_endpoints()
        return self

    @property
    def docs_enabled(self) -> bool:
        return self.env != "production" or self.public_docs

    def _refuse_open_production_endpoints(self) -> None:
        """What a default install leaves open: each refusal names the setting to change."""
        db = urlsplit(self.database_url)
        if db.scheme.startswith("postgresql") and (db.password or "") in _WEAK_PASSWORDS:
            raise ValueError(
                "ATELIER_DATABASE_URL: the PostgreSQL password is empty or a well-known default "
                "(such as 'atelier'); set a strong POSTGRES_PASSWORD in production"
            )
        # kombu accepts several broker URLs separated by ';' (fail-over); each needs a password.
        for url in filter(None, (u.strip() for u in self.broker_url.split(";"))):
            broker = urlsplit(url)
            if broker.scheme in {"memory", "filesystem"}:
                continue
            if (broker.password or "") in _WEAK_PASSWORDS:
                raise ValueError(
                    f"ATELIER_BROKER_URL: {broker.scheme}://{broker.hostname}... has no password or a "
                    "well-known default one; production needs e.g. redis://:PASSWORD@host:6379/0"
                )
        public = self.s3_public_endpoint_url or self.s3_endpoint_url
        if public and (urlsplit(public).hostname or "").lower() in _LOOPBACK_HOSTS:
            raise ValueError(
                f"ATELIER_S3_PUBLIC_ENDPOINT_URL: presigned URLs would name {public!r}, which only "
                "this host resolves; set the address browsers reach the object store at"
            )
        if not self.metrics_token:
            raise ValueError(
                "ATELIER_METRICS_TOKEN must be set in production: /metrics would be public otherwise"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
