"""`atelier keys create|list|revoke|rotate-webhook-secret`: API keys, on the database (how the first
admin key is made: ATELIER_DATABASE_URL or an `atelier up` data dir) or over HTTP with `--api`.
A new key's secret goes to stdout and its webhook signing secret to stderr, both shown only once."""

from __future__ import annotations

import json
from pathlib import Path

import click

from atelier.cli.options import key_option, make_client


@click.group()
def keys() -> None:
    """API keys."""


keys_api_option = click.option(
    "--api",
    "api_url",
    default=None,
    help="manage keys over HTTP at this API URL (with ATELIER_API_KEY or --key-file, an admin key) "
    "instead of on the database",
)


@keys.command("create")
@click.option("--name", required=True)
@click.option(
    "--scopes", default="read,submit", show_default=True, help="comma-separated: read,submit,catalogue,admin"
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="use the database of an `atelier up` data dir instead of ATELIER_DATABASE_URL",
)
@click.option("--json", "as_json", is_flag=True, help="print id, key and webhook secret as one JSON object")
@keys_api_option
@key_option
def keys_create(
    name: str, scopes: str, data_dir: Path | None, as_json: bool, api_url: str | None, key_file: Path | None
) -> None:
    """Create a key. Its secret goes to stdout (`KEY=$(atelier keys create ...)` captures it) and its
    webhook signing secret to stderr; both are shown only this once."""
    names = [s.strip() for s in scopes.split(",") if s.strip()]
    if api_url:
        created = make_client(api_url, key_file).keys.create(name, names)
        key_id, secret, webhook_secret = created.id, created.secret, created.webhook_secret
    else:
        from atelier.core import auth
        from atelier.core.db import session_scope

        try:
            with session_scope(_keys_db_url(data_dir)) as session:
                key, secret = auth.create_key(session=session, name=name, scopes=names)
                key_id, webhook_secret = key.id, key.webhook_secret
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--scopes") from exc
    if as_json:
        click.echo(json.dumps({"id": key_id, "name": name, "scopes": names, "secret": secret,
                               "webhook_secret": webhook_secret}))  # fmt: skip
        return
    click.echo(secret)
    click.echo(f"key id          {key_id}", err=True)
    click.echo(f"webhook secret  {webhook_secret}  (verifies this key's webhooks; shown only once)", err=True)


def _keys_db_url(data_dir: Path | None) -> str:
    from atelier.core.config import get_settings

    return f"sqlite:///{data_dir.resolve() / 'atelier.db'}" if data_dir else get_settings().database_url


@keys.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="as for `keys create`")
@keys_api_option
@key_option
def keys_list(data_dir: Path | None, api_url: str | None, key_file: Path | None) -> None:
    """List keys: id, name, scopes, state (active, revoked, expired), created, expires."""
    if api_url:
        for k in make_client(api_url, key_file).keys.list():
            state = "revoked" if k.revoked_at else ("active" if k.active else "expired")
            expires = k.expires_at.isoformat() if k.expires_at else "-"
            click.echo(
                f"{k.id}  {state:8}  {','.join(k.scopes):28}  {k.created_at:%Y-%m-%d}  {expires}  {k.name}"
            )
        return
    from sqlalchemy import select

    from atelier.core import auth
    from atelier.core.db import session_scope
    from atelier.core.models import ApiKey

    with session_scope(_keys_db_url(data_dir), readonly=True) as session:
        for k in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
            state = "revoked" if k.revoked_at else ("active" if auth.is_active(k) else "expired")
            expires = k.expires_at.isoformat() if k.expires_at else "-"
            click.echo(
                f"{k.id}  {state:8}  {','.join(k.scopes):28}  {k.created_at:%Y-%m-%d}  {expires}  {k.name}"
            )


@keys.command("revoke")
@click.argument("key_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="as for `keys create`")
@keys_api_option
@key_option
def keys_revoke(key_id: str, data_dir: Path | None, api_url: str | None, key_file: Path | None) -> None:
    """Revoke a key by id: it answers 401 from then on."""
    if api_url:
        make_client(api_url, key_file).keys.revoke(key_id)
        click.echo(f"revoked {key_id}")
        return
    from atelier.core import auth
    from atelier.core.db import session_scope
    from atelier.core.models import ApiKey

    with session_scope(_keys_db_url(data_dir)) as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise click.BadParameter(f"no API key with id {key_id!r}", param_hint="KEY_ID")
        auth.revoke_key(session=session, key=key)
    click.echo(f"revoked {key_id}")


@keys.command("rotate-webhook-secret")
@click.argument("key_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="as for `keys create`")
@keys_api_option
@key_option
def keys_rotate(key_id: str, data_dir: Path | None, api_url: str | None, key_file: Path | None) -> None:
    """A new webhook signing secret for a key, printed once; the previous one keeps signing too for
    ATELIER_WEBHOOK_SECRET_OVERLAP_SECONDS."""
    if api_url:
        click.echo(make_client(api_url, key_file).keys.rotate_webhook_secret(key_id).webhook_secret)
        return
    from atelier.core import auth
    from atelier.core.db import session_scope
    from atelier.core.models import ApiKey

    with session_scope(_keys_db_url(data_dir)) as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise click.BadParameter(f"no API key with id {key_id!r}", param_hint="KEY_ID")
        secret = auth.rotate_webhook_secret(session=session, key=key)
    click.echo(secret)
