"""API keys over HTTP, for admins: create (the secret and the webhook signing secret are shown once),
list, revoke, and rotate a key's webhook signing secret."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from atelier.api import key_cache
from atelier.api.deps import AdminKey, SessionDep, SettingsDep, invalid
from atelier.api.schemas import KeyCreated, KeyIn, KeyOut, KeyPage, WebhookSecretOut, errors
from atelier.core import auth
from atelier.core.models import ApiKey
from atelier.core.pagination import MAX_LIMIT, BadCursor, page

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=errors(401, 403, 413, 422))


def _key_or_404(session, key_id: str) -> ApiKey:  # noqa: ANN001
    key = session.get(ApiKey, key_id)
    if key is None:
        raise HTTPException(404, detail=f"no API key with id {key_id!r}")
    return key


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(body: KeyIn, _: AdminKey, session: SessionDep):
    try:
        key, secret = auth.create_key(
            session=session, name=body.name, scopes=list(body.scopes), expires_at=body.expires_at
        )
    except ValueError as exc:
        field = "expires_at" if "expires_at" in str(exc) else "scopes"
        raise invalid("body", field, msg=str(exc)) from exc
    out = KeyOut.of(key, active=True).model_dump()
    return KeyCreated(**out, secret=secret, webhook_secret=key.webhook_secret)


@router.get("", response_model=KeyPage)
def list_keys(
    _: AdminKey,
    session: SessionDep,
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    cursor: str | None = None,
):
    try:
        rows, next_cursor = page(
            select(ApiKey),
            session=session,
            time_col=ApiKey.created_at,
            id_col=ApiKey.id,
            limit=limit,
            cursor=cursor,
        )
    except BadCursor as exc:
        raise invalid("query", "cursor", msg=str(exc)) from exc
    return KeyPage(items=[KeyOut.of(k, active=auth.is_active(k)) for k in rows], next_cursor=next_cursor)


@router.post("/{key_id}/revoke", response_model=KeyOut, responses=errors(404))
def revoke_key(key_id: str, _: AdminKey, session: SessionDep):
    key = auth.revoke_key(session=session, key=_key_or_404(session, key_id))
    out = KeyOut.of(key, active=False)
    # Commit, then forget: cleared before the commit, a request in between would read the key as still
    # active and cache it again for ATELIER_API_KEY_CACHE_SECONDS. This process forgets it at once;
    # other API processes within that time.
    session.commit()
    key_cache.keys.clear()
    return out


@router.post("/{key_id}/webhook-secret", response_model=WebhookSecretOut, responses=errors(404))
def rotate_webhook_secret(key_id: str, _: AdminKey, session: SessionDep, settings: SettingsDep):
    key = _key_or_404(session, key_id)
    secret = auth.rotate_webhook_secret(session=session, key=key)
    until = key.webhook_secret_rotated_at + timedelta(seconds=settings.webhook_secret_overlap_seconds)
    return WebhookSecretOut(
        webhook_secret=secret, previous_valid_until=until if key.webhook_secret_previous else None
    )
