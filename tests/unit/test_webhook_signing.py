"""Standard Webhooks signatures, checked with the reference verifier (PyPI `standardwebhooks`)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from atelier.core import auth
from atelier.core.models import ApiKey
from atelier.core.models.base import utcnow
from atelier.webhooks import signing as webhook_signing

BODY = b'{"id":"j1","status":"succeeded"}'


def test_reference_verifier_accepts_our_signature():
    secret = auth.new_webhook_secret()
    headers = webhook_signing.sign(secret, "msg_j1", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, headers) == {"id": "j1", "status": "succeeded"}
    assert webhook_signing.verify(secret, headers, BODY, now=time.time())


@pytest.mark.parametrize("tamper", ["body", "secret", "old", "id"])
def test_tampered_other_or_replayed_deliveries_are_refused(tamper):
    secret = auth.new_webhook_secret()
    ts = int(time.time()) - (600 if tamper == "old" else 0)  # past the 5-minute tolerance: a replay
    headers = webhook_signing.sign(secret, "msg_j1", ts, BODY)
    body, key = BODY, secret
    if tamper == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif tamper == "secret":
        key = auth.new_webhook_secret()  # another receiver's secret cannot forge this one's
    elif tamper == "id":
        headers["webhook-id"] = "msg_other"
    with pytest.raises(WebhookVerificationError):
        Webhook(key).verify(body, headers)
    assert not webhook_signing.verify(key, headers, body, now=time.time())


def test_rotation_signs_with_both_secrets_during_the_overlap_only():
    key = ApiKey(name="k", key_hash="h", scopes=["submit"], webhook_secret=auth.new_webhook_secret())
    old = key.webhook_secret
    new = auth.rotate_webhook_secret(session=None, key=key)
    signing = auth.signing_secrets(key, overlap_seconds=3600)
    assert signing == [new, old]
    headers = webhook_signing.sign(signing, "msg_j1", int(time.time()), BODY)
    Webhook(old).verify(BODY, headers)  # a receiver not yet switched
    Webhook(new).verify(BODY, headers)  # a receiver already switched
    later = utcnow() + timedelta(hours=2)
    assert auth.signing_secrets(key, overlap_seconds=3600, now=later) == [new]


def test_keys_without_their_own_secret_do_not_share_one(session):
    """Two keys made before per-key secrets: a receiver of one cannot forge the other's deliveries."""
    from atelier.core import jobs
    from atelier.core.config import Settings

    settings = Settings(webhook_secret="deployment")
    signed = {}
    for name in ("a", "b"):
        key, _ = auth.create_key(session=session, name=name, scopes=["submit"])
        key.webhook_secret = None  # as the 0005 migration left the keys that existed before it
        job = jobs.create_job(session=session, kind="generate", params={}, api_key_id=key.id)
        session.flush()
        headers = webhook_signing.headers_for_job(session, job, BODY, settings, now=time.time())
        own = webhook_signing.legacy_key_secret("deployment", key.id)
        Webhook(own).verify(BODY, headers)
        signed[name] = (own, headers)
    (secret_a, _), (_, headers_b) = signed["a"], signed["b"]
    assert secret_a != signed["b"][0]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_a).verify(BODY, headers_b)
