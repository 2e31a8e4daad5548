from datetime import datetime

import pytest
from pydantic import ValidationError

from atelier.core import jobs
from atelier.core.auth import create_key, has_scope, hash_key
from atelier.core.config import Settings
from atelier.core.models import ApiKey
from atelier.core.models.base import utcnow
from atelier.core.pagination import BadCursor, decode_cursor, encode_cursor


def test_production_refuses_development_secrets(monkeypatch):
    for name in (
        "ATELIER_S3_SECRET_KEY",
        "ATELIER_WEBHOOK_SECRET",
        "ATELIER_UI_SESSION_SECRET",
        "ATELIER_DATABASE_URL",  # a PostgreSQL test's URL without a password is refused in production
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="ATELIER_S3_SECRET_KEY"):
        Settings(env="production")
    # the gallery's secret is its own, never derived from the S3 one
    with pytest.raises(ValidationError, match="ATELIER_UI_SESSION_SECRET"):
        Settings(env="production", s3_secret_key="s3cret", webhook_secret="hooks3cret")
    with pytest.raises(ValidationError, match="ATELIER_UI_SESSION_SECRET"):
        Settings(env="production", s3_secret_key="s3cret", webhook_secret="h", ui_session_secret="short")
    ok = Settings(
        env="production",
        s3_secret_key="s3cret",
        webhook_secret="hooks3cret",
        ui_session_secret="u" * 32,
        broker_url="redis://:r3dis@redis:6379/0",
        s3_public_endpoint_url="https://s3.example.com",
        metrics_token="scrape",
    )
    assert ok.env == "production"  # the other production refusals: tests/unit/test_production.py


def test_hard_time_limit_must_stay_under_the_visibility_timeout():
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(task_soft_time_limit=100, task_time_limit=4000, broker_visibility_timeout=3600)


def test_settings_read_from_environment(monkeypatch):
    monkeypatch.setenv("ATELIER_S3_BUCKET", "designs")
    monkeypatch.setenv("ATELIER_MAX_DELIVERIES", "7")
    s = Settings()
    assert s.s3_bucket == "designs" and s.max_deliveries == 7


def test_truncation_sweep_setting_names_what_is_wrong(monkeypatch):
    monkeypatch.setenv("ATELIER_TRUNCATION_SWEEP", "0.8, 0.6")
    assert Settings().truncation_values == (0.6, 0.8, 1.0)  # 1.0, the reference, always comes along
    for bad in ("0.8,seven", "0.8,1.5", "0"):
        monkeypatch.setenv("ATELIER_TRUNCATION_SWEEP", bad)
        with pytest.raises(ValidationError, match="truncation_sweep"):
            Settings()


@pytest.mark.parametrize(
    ("current", "target", "legal"),
    [
        ("queued", "running", True),
        ("queued", "cancelled", True),
        ("queued", "succeeded", False),
        ("running", "succeeded", True),
        ("running", "partially_succeeded", True),
        ("running", "queued", False),
        ("succeeded", "running", False),
        ("cancelled", "queued", False),
        ("failed", "succeeded", False),
    ],
)
def test_legal_transitions(current, target, legal):
    assert jobs.can_transition(current, target) is legal


def test_cursor_round_trip_and_garbage():
    at = utcnow()
    assert decode_cursor(encode_cursor(at, "abc"), datetime, str) == (at, "abc")
    assert decode_cursor(encode_cursor(41), int) == (41,)
    with pytest.raises(BadCursor):
        decode_cursor("not-a-cursor", int)
    with pytest.raises(BadCursor):
        decode_cursor(encode_cursor("41"), int)  # a string where the index was
    with pytest.raises(BadCursor):  # past a SQL BIGINT (was a 500)
        decode_cursor(encode_cursor(10**30), int)
    assert decode_cursor(encode_cursor(2**63 - 1), int) == (2**63 - 1,)
    with pytest.raises(BadCursor):  # a zone-less time (was a 500)
        decode_cursor(encode_cursor(at.replace(tzinfo=None), "abc"), datetime, str)


def test_admin_scope_implies_the_others():
    key = ApiKey(name="k", key_hash=hash_key("x"), scopes=["admin"])
    assert has_scope(key, "submit") and has_scope(key, "catalogue")
    reader = ApiKey(name="r", key_hash=hash_key("y"), scopes=["read"])
    assert has_scope(reader, "read") and not has_scope(reader, "submit")


def test_unknown_scope_refused():
    with pytest.raises(ValueError, match="unknown scope"):
        create_key(session=None, name="x", scopes=["read", "root"])


def test_atelier_up_keeps_one_private_gallery_secret_in_its_data_dir(tmp_path, monkeypatch):
    import os

    from atelier.cli.stack import Stack

    monkeypatch.delenv("ATELIER_UI_SESSION_SECRET", raising=False)
    first = Stack(tmp_path).env["ATELIER_UI_SESSION_SECRET"]
    assert Stack(tmp_path).env["ATELIER_UI_SESSION_SECRET"] == first  # the next start signs alike
    assert len(first) >= 32 and first not in Stack(tmp_path).env["ATELIER_S3_SECRET_KEY"]
    assert os.stat(tmp_path / "ui-session.secret").st_mode & 0o777 == 0o600
    assert Stack(tmp_path / "other").env["ATELIER_UI_SESSION_SECRET"] != first
