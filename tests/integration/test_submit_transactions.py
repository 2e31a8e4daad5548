"""Training submits and scheduled retrains against real SQL and S3: no write transaction is open while
the dataset manifest goes to S3, so on SQLite another writer is never locked out behind a catalogue read
and a PUT. A probe store (the real S3 client underneath) looks at the database during each PUT."""

from __future__ import annotations

import random
import sqlite3
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest

from atelier.catalogue.synthetic import catalogue_zip, make_catalogue
from tests.integration.conftest import make_key

pytestmark = pytest.mark.integration


def _another_writer_gets_the_lock(url: str) -> bool | None:
    """SQLite: can a second connection start a write transaction now? (None elsewhere.)"""
    if not url.startswith("sqlite"):
        return None
    conn = sqlite3.connect(url.split("///", 1)[1], timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def _probe(stack, session):  # noqa: ANN001, ANN202
    from atelier.core.storage import ObjectStore

    class Probe(ObjectStore):
        seen: list[tuple[str, bool, bool | None]] = []

        def put(self, key, data, **kwargs):  # noqa: ANN001, ANN003, ANN201
            url = stack.settings.database_url
            self.seen.append((key, session.in_transaction(), _another_writer_gets_the_lock(url)))
            return super().put(key, data, **kwargs)

    return Probe(stack.settings)


def _upload(stack, n: int, categories: tuple[str, ...]) -> None:  # noqa: ANN001
    secret = make_key(stack, ["catalogue"])
    data = catalogue_zip(make_catalogue(n, categories, seed=random.randrange(1 << 30)))
    r = httpx.post(
        f"{stack.api_url}/v1/catalogue/images",
        headers={"Authorization": f"Bearer {secret}"},
        files=[("files", ("c.zip", data))],
        timeout=60,
    )
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def photos(bare_stack_db):
    """A drawn catalogue: hats and shoes."""
    _upload(bare_stack_db, 4, ("hat", "shoes"))


def test_a_training_submit_puts_its_manifest_outside_any_write_transaction(bare_stack_db, photos):
    from atelier.core import auth
    from atelier.core.db import session_scope
    from atelier.training import service as training

    url = bare_stack_db.settings.database_url
    with session_scope(url) as session:
        key, _ = auth.create_key(session=session, name="trainer", scopes=["submit"])
        key = SimpleNamespace(id=key.id, scopes=list(key.scopes))
    _upload(bare_stack_db, 1, ("hat",))  # a list no earlier run froze: its manifest is new
    with session_scope(url) as session:
        store = _probe(bare_stack_db, session)
        job, created = training.submit(
            session=session,
            store=store,
            settings=bare_stack_db.settings,
            request=training.TrainingRequest(preset="tiny", steps=10, categories=["hat", "shoes"]),
            key=key,
        )
        assert created and job.params["snapshot_id"]
    manifests = [s for s in store.seen if s[0].endswith("manifest.json")]
    assert manifests, store.seen
    for key_name, in_transaction, writer_ok in manifests:
        assert not in_transaction, f"a transaction was open during the PUT of {key_name}"
        assert writer_ok is not False, f"another writer was locked out during the PUT of {key_name}"


def test_a_scheduled_retrain_puts_its_manifest_outside_any_write_transaction(
    bare_stack_db, photos, monkeypatch
):
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine, session_scope
    from atelier.core.models import Schedule, ScheduleRun, utcnow
    from atelier.training import schedule_tasks, schedules

    for name, value in bare_stack_db.env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    dispose_engine()
    try:
        _upload(bare_stack_db, 1, ("shoes",))  # a new list again
        name = f"retrain-{random.randrange(1 << 30)}"
        with session_scope() as session:
            schedules.put_schedule(
                session=session, name=name, cron="0 2 * * *", enabled=True,
                params={"min_new_images": 1, "steps": 10, "categories": ["hat", "shoes"]},
            )  # fmt: skip
            session.get(Schedule, name).next_run_at = utcnow() - timedelta(minutes=1)
        holder = {}

        def probe_store():  # noqa: ANN202
            with session_scope() as watched:  # the probe asks the database itself, not a session
                holder["store"] = _probe(bare_stack_db, watched)
            return holder["store"]

        monkeypatch.setattr(schedule_tasks, "get_store", probe_store)
        fired = schedule_tasks.run_fire_schedules()
        assert any(k.startswith(f"{name}:") for k in fired), fired
        with session_scope(readonly=True) as session:
            run = session.get(ScheduleRun, next(k for k in fired if k.startswith(f"{name}:")))
            assert run.job_id is not None, run.outcome
        manifests = [s for s in holder["store"].seen if s[0].endswith("manifest.json")]
        assert manifests
        assert all(writer_ok is not False for _, _, writer_ok in manifests), manifests
    finally:
        get_settings.cache_clear()
        dispose_engine()


def test_an_upload_that_fails_before_its_job_leaves_no_photo_behind(bare_stack_db):
    """The photos' rows are committed with their ingest job or not at all: a request that fails after
    every photo was stored (here: rolled back instead of adding the job) leaves no row."""
    import io

    from sqlalchemy import func, select

    from atelier.catalogue import service as catalogue
    from atelier.core.db import session_factory
    from atelier.core.models import CatalogueImage
    from atelier.core.storage import ObjectStore

    url = bare_stack_db.settings.database_url
    data = catalogue_zip(make_catalogue(3, ("dress",), seed=random.randrange(1 << 30)))
    session = session_factory(url)()
    try:
        result = catalogue.ingest_uploads(
            session=session,
            store=ObjectStore(bare_stack_db.settings),
            settings=bare_stack_db.settings,
            uploads=[catalogue.UploadFile("c.zip", io.BytesIO(data))],
            category=None,
        )
        assert len(result.new_ids) == 3
        session.rollback()  # the request failed before its ingest job was added
    finally:
        session.close()
    with session_factory(url, readonly=True)() as s:
        left = s.scalar(select(func.count()).where(CatalogueImage.id.in_(result.new_ids)))
    assert left == 0
