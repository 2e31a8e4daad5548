"""Registering a checkpoint: the object is stored before a row names it, and a slow upload holds no
transaction open (on PostgreSQL a server timeout would end it and lose the row)."""

from __future__ import annotations

import time

from sqlalchemy import select

from atelier.core.config import get_settings
from atelier.core.db import dispose_engine, session_scope
from atelier.core.models import ModelVersion
from atelier.training import registry


class SlowStore:
    """Puts that take longer than the database lets a transaction idle; records whether a version row
    already named the key when its object was stored."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds, self.objects, self.row_before_object = url, seconds, {}, []

    def put(self, key: str, data: bytes) -> None:
        with session_scope(self.url) as session:
            named = session.scalars(select(ModelVersion.id).where(ModelVersion.checkpoint_key == key)).first()
        self.row_before_object.append(named is not None)
        time.sleep(self.seconds)
        self.objects[key] = data


def test_a_checkpoint_stored_slower_than_the_idle_transaction_timeout_is_registered(db_url, monkeypatch):
    monkeypatch.setenv("ATELIER_DB_IDLE_IN_TRANSACTION_SECONDS", "1")
    get_settings.cache_clear()
    dispose_engine()
    try:
        store = SlowStore(db_url, seconds=2.0)
        version_id = registry.register_checkpoint(
            store, b"weights", database_url=db_url, arch="atelier", preset="tiny", resolution=32,
            class_names=["dress", "hat"], steps=7,
        )  # fmt: skip
        with session_scope(db_url) as session:
            version = session.get(ModelVersion, version_id)
            assert version is not None
            assert (version.checkpoint_key, version.steps, version.class_names) == (
                registry.checkpoint_key(version_id), 7, ["dress", "hat"],
            )  # fmt: skip
        assert store.objects == {registry.checkpoint_key(version_id): b"weights"}
        assert store.row_before_object == [False]
    finally:
        get_settings.cache_clear()
        dispose_engine()
