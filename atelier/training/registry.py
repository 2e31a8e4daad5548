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
from atelier.core.db import session_scope
from atelier.core.models import ModelVersion, utcnow
from atelier.core.models.base import new_id

PRODUCTION = "production"


class ModelNotFound(LookupError):
    pass


def checkpoint_key(version_id: str) -> str:
    return f"models/{version_id}/checkpoint.pt"


def register_checkpoint(
    store: Any, checkpoint: bytes, *, database_url: str | None = None, **fields: Any
) -> str:
    """Store ``checkpoint`` under a new version's key, then register that version (``fields``: the
    columns besides id and checkpoint_key); returns its id. The object exists before any row names it,
    and no transaction stays open across the upload: a slow put would otherwise run into the server's
    idle-in-transaction timeout (``db_idle_in_transaction_seconds``) and lose the row."""
    version_id = new_id()
    key = checkpoint_key(version_id)
    store.put(key, checkpoint)
    with session_scope(database_url) as session:
        create_version(session=session, id=version_id, checkpoint_key=key, **fields)
    return version_id


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
