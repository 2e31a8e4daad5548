"""Dependencies shared by the routes: the SQL session, the object store and API-key auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from api import key_cache
from api.key_cache import KeyInfo
from core import auth
from core.config import Settings, get_settings
from core.db import session_scope
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


async def _current_key(request: Request) -> KeyInfo:
    # async, and no session: a cached key costs no thread hop and no SQL; a miss reads it on a thread.
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = key_cache.keys.cached(secret)
    if key is None:
        ttl = get_settings().api_key_cache_seconds
        key = await to_thread.run_sync(lambda: key_cache.keys.lookup(secret, ttl=ttl))
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="unknown or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


def require(scope: str):  # noqa: ANN201
    async def checker(key: Annotated[KeyInfo, Depends(_current_key)]) -> KeyInfo:
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
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[{"loc": list(loc), "msg": msg}])
