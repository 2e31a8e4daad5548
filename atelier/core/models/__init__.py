"""ORM tables: the only schema source (migrations/ is generated from and checked against these)."""

from atelier.core.models.api_key import ApiKey
from atelier.core.models.base import Base, utcnow
from atelier.core.models.catalogue import CatalogueImage, DatasetSnapshot
from atelier.core.models.generation import GeneratedImage
from atelier.core.models.job import Job, JobEvent
from atelier.core.models.model_version import ModelVersion
from atelier.core.models.schedule import Schedule, ScheduleRun
from atelier.core.models.ui_session import UiSession
from atelier.core.models.unit import WorkUnit

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
    "UiSession",
    "WorkUnit",
    "utcnow",
]
