"""Dependencies shared by the routes: the SQL session, the object store and API-key auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core import auth
from core.config import Settings, get_settings
from core.db import session_scope
from core.models import ApiKey
from core.storage import ObjectStore, get_store


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(readonly=request.method in ("GET", "HEAD")) as session:
        yield session


# scope="function": the commit happens before the response is sent, so a client that got its 201
# reads its own write on the next request (the default "request" scope commits after sending).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _store() -> ObjectStore:
    return get_store()


StoreDep = Annotated[ObjectStore, Depends(_store)]


# Declares the bearer scheme in the OpenAPI document (so /docs' Authorize works); the check is ours.
bearer = HTTPBearer(auto_error=False, description="an Atelier API key: `Authorization: Bearer atl_...`")


def _current_key(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> ApiKey:
    secret = credentials.credentials if credentials else ""
    if not secret:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = auth.find_key(session=session, secret=secret.strip())
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="unknown, revoked or expired API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


def require(scope: str):  # noqa: ANN201
    # Security(..., scopes=) writes the scope into the operation's `security` in the OpenAPI document
    # (OpenAPI 3.1 allows role names for non-OAuth schemes): the auth matrix test reads it from there.
    def checker(key: ApiKey = Security(_current_key, scopes=[scope])) -> ApiKey:
        if not auth.has_scope(key, scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this API key lacks the `{scope}` scope")
        return key

    return checker


ReadKey = Annotated[ApiKey, Depends(require("read"))]
SubmitKey = Annotated[ApiKey, Depends(require("submit"))]
CatalogueKey = Annotated[ApiKey, Depends(require("catalogue"))]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]


def invalid(*loc: str, msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors: `detail` names the field at fault."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}]
    )


def is_admin(key: ApiKey) -> bool:
    return "admin" in key.scopes


def owns(key: ApiKey, job) -> bool:  # noqa: ANN001
    """Jobs belong to the key that submitted them; admin keys act on all (scheduled jobs have no key)."""
    return is_admin(key) or (job.api_key_id is not None and job.api_key_id == key.id)


def too_many(msg: str, retry_after: float) -> HTTPException:
    return HTTPException(429, detail=msg, headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})
