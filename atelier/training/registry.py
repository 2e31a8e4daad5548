"""The model registry: versions of trained generators, and which one is `production`.

Exactly one version is production at a time; a partial unique index enforces it in SQL. A promotion
clears the old flag and sets the new one in one transaction; two concurrent promotions cannot both
commit (the loser gets an IntegrityError and retries against the new state).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atelier.core import jobs
from atelier.core.models import ModelVersion, utcnow

PRODUCTION = "production"


class ModelNotFound(LookupError):
    pass


def checkpoint_key(version_id: str) -> str:
    return f"models/{version_id}/checkpoint.pt"


def production(*, session: Session) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.is_production.is_(True))).one_or_none()


def resolve_model(*, session: Session, ref: str | None) -> ModelVersion:
    """`production` (the default) or a version id -> the version, or ModelNotFound saying why."""
    ref = ref or PRODUCTION
    if ref == PRODUCTION:
        version = production(session=session)
        if version is None:
            raise ModelNotFound("there is no production model yet: train one or pass a version id")
        return version
    version = session.get(ModelVersion, ref)
    if version is None:
        raise ModelNotFound(f"no model version with id {ref!r}")
    return version


def create_version(*, session: Session, **fields: Any) -> ModelVersion:
    version = ModelVersion(**fields)
    session.add(version)
    session.flush()
    return version


def promote(*, session: Session, version_id: str, reason: str, job_id: str | None = None) -> ModelVersion:
    """Make `version_id` production. Commits; retries when a concurrent promotion won the race."""
    for attempt in range(5):
        try:
            version = session.get(ModelVersion, version_id, with_for_update=True)
            if version is None:
                raise ModelNotFound(f"no model version with id {version_id!r}")
            if not version.is_production:
                session.execute(
                    update(ModelVersion)
                    .where(ModelVersion.is_production.is_(True))
                    .values(is_production=False)
                    .execution_options(synchronize_session=False)
                )
                version.is_production = True
                version.promoted_at = utcnow()
            if job_id:
                jobs.add_event(
                    session=session,
                    job_id=job_id,
                    kind="promoted",
                    message=f"model {version_id} promoted to production: {reason}",
                )
            session.commit()
            session.refresh(version)
            return version
        except IntegrityError:
            session.rollback()
            if attempt == 4:
                raise
    raise AssertionError("unreachable")
