"""A typed client of the Atelier HTTP API, installable without the server (`pip install atelier`).

    from atelier.client import Client, GenerationRequest

    with Client("http://127.0.0.1:8000", api_key) as client:
        job = client.generation.submit(GenerationRequest(per_category={"dress": 50}, seed=7))
        job = client.jobs.wait(job.id)
        client.generation.download(job.id, Path("designs"))

`AsyncClient` has the same resources with `async` methods. Results are the pydantic models of
atelier.client.models; errors the exceptions of atelier.client.errors.
"""

from atelier.client.aio import AsyncClient
from atelier.client.errors import (
    ApiError,
    ApiUnreachable,
    AtelierError,
    BadRequest,
    ChecksumMismatch,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    WaitTimeout,
)
from atelier.client.models import (
    TERMINAL,
    AcceptedImage,
    ApiKey,
    CatalogueImage,
    CatalogueStats,
    CreatedKey,
    DownloadReport,
    FolderUpload,
    GeneratedImage,
    Job,
    JobEvent,
    ManifestEntry,
    ModelVersion,
    Page,
    Progress,
    RejectedFile,
    Schedule,
    ScheduleRun,
    TrendReport,
    UploadResult,
    WebhookEvent,
    WebhookSecret,
)
from atelier.client.requests import (
    Background,
    FollowReport,
    GenerationRequest,
    KeyRequest,
    Recolor,
    RetrainParams,
    TrainingRequest,
    TrendRequest,
    Tryon,
    Upscale,
)
from atelier.client.sync import Client

__all__ = [
    "TERMINAL",
    "AcceptedImage",
    "ApiError",
    "ApiKey",
    "ApiUnreachable",
    "AsyncClient",
    "AtelierError",
    "BadRequest",
    "Background",
    "CatalogueImage",
    "CatalogueStats",
    "ChecksumMismatch",
    "Client",
    "Conflict",
    "CreatedKey",
    "DownloadReport",
    "FolderUpload",
    "FollowReport",
    "Forbidden",
    "GeneratedImage",
    "GenerationRequest",
    "InvalidRequest",
    "Job",
    "JobEvent",
    "KeyRequest",
    "ManifestEntry",
    "ModelVersion",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "Progress",
    "RateLimited",
    "Recolor",
    "RejectedFile",
    "RetrainParams",
    "Schedule",
    "ScheduleRun",
    "ServerError",
    "TrainingRequest",
    "TrendReport",
    "TrendRequest",
    "Tryon",
    "Unauthorized",
    "UploadResult",
    "Upscale",
    "WaitTimeout",
    "WebhookEvent",
    "WebhookSecret",
]
