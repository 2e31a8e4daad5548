"""Dependencies shared by the routes: the SQL session, the object store and API-key auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from atelier.api import key_cache
from atelier.api.key_cache import KeyInfo
from atelier.core import auth, ownership
from atelier.core.config import Settings, get_settings
from atelier.core.db import session_scope
from atelier.core.storage import ObjectStore, get_store


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


async def _current_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> KeyInfo:
    # async, and no session: a cached key costs no thread hop and no SQL; a miss reads it on a thread.
    secret = credentials.credentials.strip() if credentials else ""
    if not secret:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = await key_cache.resolve(secret)
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
    async def checker(key: KeyInfo = Security(_current_key, scopes=[scope])) -> KeyInfo:
        if not auth.has_scope(key, scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this API key lacks the `{scope}` scope")
        return key

    return checker


ReadKey = Annotated[KeyInfo, Depends(require("read"))]
SubmitKey = Annotated[KeyInfo, Depends(require("submit"))]
CatalogueKey = Annotated[KeyInfo, Depends(require("catalogue"))]
AdminKey = Annotated[KeyInfo, Depends(require("admin"))]


def invalid(*loc: str, msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors: `detail` names the field at fault."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}]
    )


def is_admin(key: KeyInfo) -> bool:
    return ownership.is_admin(key)


def too_many(msg: str, retry_after: float) -> HTTPException:
    return HTTPException(429, detail=msg, headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})
