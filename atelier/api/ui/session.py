"""Gallery sign-in: an API key becomes a server-side session; forms carry a CSRF token.

    POST /ui/login (key)  -> a `ui_sessions` row; cookie `atelier_ui` = a random token (the row holds
                             only its SHA-256)        HttpOnly, SameSite=Strict, Secure over HTTPS
    every page            -> the row exists and has not expired, and its key is still active (not
                             revoked, not expired): a session ends with its key
    POST /ui/logout       -> the row is deleted: the same cookie, replayed, signs nobody in
    every POST form       -> hidden `csrf` = HMAC(secret, "csrf:" + cookie), compared in constant time

The secret (ATELIER_UI_SESSION_SECRET) signs only CSRF tokens. Production requires it to be set
(atelier/core/config.py); elsewhere an unset one is random per process (`atelier up` keeps one in its
data directory), never derived from another secret. Behind a TLS-terminating proxy,
ATELIER_TRUST_FORWARDED_HEADERS makes X-Forwarded-Proto/-Host the request's scheme and host, so the
cookie is Secure and the sign-in form's Origin matches. SameSite=Strict already keeps other sites'
forms from carrying the cookie; the token covers browsers and proxies that do not honour it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from functools import cache
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, HTTPException, Request, status
from sqlalchemy import delete
from sqlalchemy.orm import Session

from atelier.api.deps import SessionDep
from atelier.core import auth
from atelier.core.config import get_settings
from atelier.core.models import ApiKey, UiSession
from atelier.core.models.base import utcnow

COOKIE = "atelier_ui"


@cache
def _process_secret() -> bytes:
    # development only (production refuses an unset secret): random, so it says nothing of any other
    return secrets.token_bytes(32)


def _secret() -> bytes:
    configured = get_settings().ui_session_secret
    return configured.encode() if configured else _process_secret()


def _sign(payload: str) -> str:
    return hmac.new(_secret(), payload.encode(), hashlib.sha256).hexdigest()


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, key: ApiKey) -> str:
    """A new session of `key`; returns the cookie's token. It ends at the key's own expiry if sooner."""
    token = secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(hours=get_settings().ui_session_hours)
    if key.expires_at is not None:
        expires = min(expires, key.expires_at)
    session.add(UiSession(id=_session_id(token), api_key_id=key.id, expires_at=expires))
    # sessions that ended are removed as new ones start: the table holds the live ones and a few more
    session.execute(delete(UiSession).where(UiSession.expires_at < utcnow()))
    return token


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(UiSession).where(UiSession.id == _session_id(token)))


def key_of_token(session: Session, token: str | None) -> ApiKey | None:
    if not token or len(token) > 200:
        return None
    row = session.get(UiSession, _session_id(token))
    if row is None or row.expires_at <= utcnow():
        return None
    key = session.get(ApiKey, row.api_key_id)
    if key is None or not auth.is_active(key):
        return None
    return key


def csrf_token(request: Request) -> str:
    return _sign("csrf:" + (request.cookies.get(COOKIE) or ""))[:32]


def origin_of(request: Request) -> str:
    """scheme://host as the browser sees it: from X-Forwarded-Proto/-Host behind a trusted proxy."""
    scheme, host = request.url.scheme, request.url.netloc
    if get_settings().trust_forwarded_headers:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        forwarded_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        scheme = proto if proto in ("http", "https") else scheme
        host = forwarded_host or host
    return f"{scheme}://{host}"


def set_session_cookie(response, request: Request, token: str) -> None:  # noqa: ANN001
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(get_settings().ui_session_hours * 3600),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=origin_of(request).startswith("https://"),
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
