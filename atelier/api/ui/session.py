"""Gallery sign-in: an API key becomes a signed session cookie; forms carry a CSRF token.

    POST /ui/login (key)  -> cookie `atelier_ui` = "<key id>.<expires>.<hmac>"   HttpOnly, SameSite=Strict
    every page            -> the cookie names a key that still exists, is not revoked, has the scope
    every POST form       -> hidden `csrf` = HMAC(secret, "csrf:" + cookie), compared in constant time

The cookie holds no secret of the key, only its id; the signature (ATELIER_UI_SESSION_SECRET) covers
the key's stored hash too, so a session dies with its key. SameSite=Strict already keeps other sites'
forms from carrying the cookie; the token covers browsers and proxies that do not honour it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, HTTPException, Request, status
from sqlalchemy.orm import Session

from atelier.api.deps import SessionDep
from atelier.core import auth
from atelier.core.config import get_settings
from atelier.core.models import ApiKey

COOKIE = "atelier_ui"


def _secret() -> bytes:
    settings = get_settings()
    if settings.ui_session_secret:
        return settings.ui_session_secret.encode()
    # domain-separated, so a session signature says nothing about the S3 secret
    return hmac.new(settings.s3_secret_key.encode(), b"atelier-ui-session", hashlib.sha256).digest()


def _sign(payload: str) -> str:
    return hmac.new(_secret(), payload.encode(), hashlib.sha256).hexdigest()


def make_token(key: ApiKey) -> str:
    expires = int(time.time() + get_settings().ui_session_hours * 3600)
    payload = f"{key.id}.{expires}"
    return f"{payload}.{_sign(payload + '.' + key.key_hash)}"


def key_of_token(session: Session, token: str | None) -> ApiKey | None:
    if not token or token.count(".") != 2:
        return None
    key_id, expires, signature = token.split(".")
    if not expires.isdigit() or int(expires) < time.time():
        return None
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(signature, _sign(f"{key_id}.{expires}.{key.key_hash}")):
        return None
    return key


def csrf_token(request: Request) -> str:
    return _sign("csrf:" + (request.cookies.get(COOKIE) or ""))[:32]


def set_session_cookie(response, request: Request, token: str) -> None:  # noqa: ANN001
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(get_settings().ui_session_hours * 3600),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _login_redirect(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(status.HTTP_303_SEE_OTHER, headers={"Location": f"/ui/login?next={quote(target)}"})


def ui_key(scope: str):  # noqa: ANN201
    def checker(request: Request, session: SessionDep) -> ApiKey:
        key = key_of_token(session, request.cookies.get(COOKIE))
        if key is None:
            raise _login_redirect(request)
        if not auth.has_scope(key, scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this API key lacks the `{scope}` scope")
        return key

    return checker


def check_csrf(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    if not hmac.compare_digest(csrf, csrf_token(request)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="the form's CSRF token is missing or stale: reload the page"
        )


UiRead = Annotated[ApiKey, Depends(ui_key("read"))]
UiSubmit = Annotated[ApiKey, Depends(ui_key("submit"))]
UiAdmin = Annotated[ApiKey, Depends(ui_key("admin"))]
Csrf = Annotated[None, Depends(check_csrf)]
