"""The hourly image quota holds for every generation mode: the count is computed once, by the service's
plan (a variations job without `count` makes 8, an interpolation 10), and that count is checked, in
SQL, before the job exists. A repeat of an idempotent submit is answered without counting again."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from atelier.core import auth, jobs, quotas
from atelier.core.config import Settings
from atelier.core.models import GeneratedImage
from atelier.generation import service as generation
from atelier.generation.schemas import GenerationRequest
from atelier.training import registry


@pytest.fixture
def key(session):
    k, _ = auth.create_key(session=session, name="quota", scopes=["submit"])
    session.commit()
    return k


@pytest.fixture
def images(session) -> list[str]:
    """Two generated images of one model, the sources of variations and interpolations."""
    v = registry.create_version(
        session=session,
        arch="atelier",
        preset="tiny",
        resolution=32,
        class_names=["dress"],
        checkpoint_key="k",
    )
    session.flush()
    source = jobs.create_job(session=session, kind="generate", params={}, total=2)
    for i in range(2):
        session.add(
            GeneratedImage(
                job_id=source.id,
                index=i,
                seed=40 + i,
                category="dress",
                key=f"generated/src/{i}.png",
                sha256="0" * 64,
                width=32,
                height=32,
                format="png",
                size_bytes=1,
                model_version_id=v.id,
            )  # fmt: skip
        )
    session.commit()
    return [f"{source.id}:0", f"{source.id}:1"]


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr("atelier.core.queue._background", None)  # send in the committing thread
    monkeypatch.setattr("atelier.core.queue.send_task", lambda *a, **k: None)


def submit(session, key, limit: int, idem: str | None = None, **body):  # noqa: ANN001, ANN003, ANN201
    spec = GenerationRequest(**body)
    job, created = generation.submit(
        session=session,
        spec=spec,
        settings=Settings(quota_images_per_hour=limit, quota_active_jobs=100),
        api_key_id=key.id,
        idempotency_key=idem,
        request_hash=spec.request_hash(),
        model_given="model" in spec.model_fields_set,
        quota_key=key,
    )
    session.commit()
    return job


@pytest.mark.parametrize(
    ("body", "counted"),
    [
        ({"mode": "variations", "image_id": 0}, 8),  # no count: the service's default
        ({"mode": "variations", "image_id": 0, "count": 5}, 5),
        ({"mode": "interpolate", "image_ids": [0, 1]}, 10),
        ({"mode": "interpolate", "image_ids": [0, 1], "count": 4}, 4),
        ({"count": 7}, 7),
        ({"per_category": {"dress": 6}}, 6),
    ],
)
def test_every_mode_is_counted_against_the_hourly_quota(session, key, images, body, counted):
    # source images by position: their ids exist only once the fixture ran
    if "mode" not in body:
        body = {**body, "model": session.scalar(select(GeneratedImage.model_version_id).limit(1))}
    if "image_id" in body:
        body = {**body, "image_id": images[body["image_id"]]}
    if "image_ids" in body:
        body = {**body, "image_ids": [images[i] for i in body["image_ids"]]}
    with pytest.raises(quotas.QuotaExceeded, match="ATELIER_QUOTA_IMAGES_PER_HOUR") as refused:
        submit(session, key, counted - 1, **body)
    assert f"{counted} more would pass the limit of {counted - 1}" in str(refused.value)
    assert refused.value.retry_after >= 1

    job = submit(session, key, counted, **body)  # exactly at the limit: passes, and is what it counted
    assert job.progress_total == counted
    with pytest.raises(quotas.QuotaExceeded, match=f"queued {counted} images in the last hour"):
        submit(session, key, counted + 1, **{**body, "seed": 1})  # one more image of a new job: over


def test_a_repeated_submit_is_not_counted_twice(session, key, images):
    body = {"mode": "variations", "image_id": images[1]}
    first = submit(session, key, 8, idem="v-1", **body)
    again = submit(session, key, 8, idem="v-1", **body)  # the hour's 8 are used, yet the repeat answers
    assert again.id == first.id


def test_interactive_cap_applies_to_the_planned_count(session, key, images):
    with pytest.raises(generation.InvalidRequest, match="ATELIER_INTERACTIVE_MAX_IMAGES") as refused:
        generation.plan(
            session=session,
            spec=GenerationRequest(mode="interpolate", image_ids=images, priority="interactive"),
            settings=Settings(interactive_max_images=9),
            model_given=False,
        )
    assert refused.value.field == "priority"


@pytest.mark.parametrize(
    ("kind", "field"),
    [("trend", "quota_active_trend_jobs"), ("ingest", "quota_active_ingest_jobs")],
)
def test_trend_and_ingest_jobs_have_quotas_of_their_own(session, key, kind, field):
    settings = Settings(**{field: 2})
    for _ in range(2):
        quotas.check_submit(session=session, key=key, settings=settings, kind=kind)
        jobs.create_job(session=session, kind=kind, params={}, api_key_id=key.id)
    with pytest.raises(quotas.QuotaExceeded, match=f"ATELIER_{field.upper()}"):
        quotas.check_submit(session=session, key=key, settings=settings, kind=kind)
    # each kind counts apart: the other quotas are untouched
    quotas.check_submit(session=session, key=key, settings=settings, kind="generate")
