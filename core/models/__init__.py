"""ORM tables: the only schema source (migrations/ is generated from and checked against these)."""

from core.models.api_key import ApiKey
from core.models.base import Base, utcnow
from core.models.catalogue import CatalogueImage, DatasetSnapshot
from core.models.generation import GeneratedImage
from core.models.job import Job, JobEvent
from core.models.model_version import ModelVersion
from core.models.schedule import Schedule, ScheduleRun
from core.models.unit import WorkUnit

__all__ = [
    "ApiKey",
    "Base",
    "CatalogueImage",
    "DatasetSnapshot",
    "GeneratedImage",
    "Job",
    "JobEvent",
    "ModelVersion",
    "Schedule",
    "ScheduleRun",
    "WorkUnit",
    "utcnow",
]
