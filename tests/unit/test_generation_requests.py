"""Generation requests: shape errors name their field, model checks name theirs, chunks and idempotency
in SQL, the webhook body equals the API's JobOut, and the manifest and ZIP are streamed from disk."""

import hashlib
import io
import json
import zipfile

import pytest
from pydantic import ValidationError

from atelier.api.schemas import JobOut
from atelier.core.config import Settings
from atelier.core.models import GeneratedImage, Job, WorkUnit
from atelier.generation import service as generation
from atelier.generation.schemas import GenerationRequest
from atelier.training import registry
from atelier.webhooks import events as webhook_events

CLASSES = ["dress", "skirt", "hat"]


def error_fields(body: dict) -> list[str]:
    with pytest.raises(ValidationError) as info:
        GenerationRequest(**body)
    return [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 5, "format": "gif"}, "format"),
        ({"count": 5, "truncation": 0}, "truncation"),
        ({"count": 5, "truncation": 1.5}, "truncation"),
        ({"count": 5, "size": 4096}, "size"),
        ({"count": 5, "quality": 0}, "quality"),
        ({"count": 5, "priority": "urgent"}, "priority"),
        ({"count": 5, "webhook_url": "not a url"}, "webhook_url"),
        ({"count": 5, "colour": "red"}, "colour"),
        ({"per_category": {"dress": -1}}, "per_category"),
        ({"count": 5, "postprocess": [{"op": "sparkle"}]}, "postprocess.0"),
        ({"count": 5, "postprocess": [{"op": "recolor"}]}, "postprocess.0.recolor"),
        ({"count": 5, "postprocess": [{"op": "recolor", "color": "#12345g"}]}, "postprocess.0.recolor.color"),
        (
            {"count": 5, "postprocess": [{"op": "tryon", "template": "giant-xl"}]},
            "postprocess.0.tryon.template",
        ),
        ({"count": 5, "postprocess": ["tryon", {"op": "tryon", "template": "slim-s"}]}, "postprocess"),
    ],
)
def test_shape_errors_name_the_field(body, field):
    assert any(f == field or f.startswith(field) for f in error_fields(body)), error_fields(body)


def test_shorthands_normalise():
    req = GenerationRequest(
        count=3, format="JPG", postprocess=["upscale", {"op": "recolor", "color": "navy"}]
    )
    assert req.format == "jpeg"
    assert req.postprocess_ops() == [
        {"op": "upscale", "sharpen": 1.0},
        {"op": "recolor", "palette": ["#000080"], "strength": 1.0},
    ]
    assert req.request_hash() == GenerationRequest(**req.model_dump(mode="json")).request_hash()


@pytest.fixture
def version(session):
    v = registry.create_version(
        session=session,
        arch="atelier",
        preset="tiny",
        resolution=32,
        class_names=CLASSES,
        checkpoint_key="models/x/checkpoint.pt",
    )
    session.commit()
    return v


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr("atelier.core.queue._background", None)  # send in the committing thread
    monkeypatch.setattr("atelier.core.queue.send_task", lambda name, **kw: calls.append((name, kw)))
    return calls


def plan(session, version, settings=None, **body):
    spec = GenerationRequest(model=version.id, **body)
    return generation.plan(session=session, spec=spec, settings=settings or Settings()).model_dump(
        mode="json"
    )


def invalid_field(session, version, settings=None, **body) -> str:
    with pytest.raises(generation.InvalidRequest) as info:
        plan(session, version, settings, **body)
    return info.value.field


def test_model_checks_name_the_field(session, version):
    assert invalid_field(session, version, per_category={"dress": 2, "gown": 1}) == "per_category"
    assert invalid_field(session, version, Settings(max_generation_count=10), count=11) == "count"
    assert invalid_field(session, version, count=4, size=40) == "size"
    assert invalid_field(session, version, count=4, size=16) == "size"
    assert invalid_field(session, version, count=4, postprocess=["upscale"]) == "postprocess"
    assert invalid_field(session, version, count=4, quality=80) == "quality"
    assert invalid_field(session, version, count=4, seed=2**31 - 2) == "seed"
    assert invalid_field(session, version, count=4, mode="variations") == "image_id"
    small = Settings(max_archive_bytes=20_000)  # 10 png at 32 px are estimated at about 20 KB
    assert invalid_field(session, version, small, count=10, archive=True) == "archive"
    assert plan(session, version, small, count=2, archive=True)["archive"] is True
    assert invalid_field(session, version, count=4, mode="variations", image_id="nope") == "image_id"
    with pytest.raises(generation.InvalidRequest) as info:
        generation.plan(session=session, spec=GenerationRequest(count=3), settings=Settings())
    assert info.value.field == "model" and "no production model" in str(info.value)


def test_tryon_op_keeps_its_template_and_needs_categories_with_a_body_region(session, version):
    planned = plan(session, version, per_category={"dress": 2, "hat": 1}, postprocess=["tryon"])
    assert planned["postprocess"] == [{"op": "tryon", "template": "regular-m"}]
    slim = plan(session, version, count=3, postprocess=[{"op": "tryon", "template": "slim-s"}, "background"])
    assert [op["op"] for op in slim["postprocess"]] == ["tryon", "background"]
    custom = registry.create_version(
        session=session,
        arch="atelier",
        preset="tiny",
        resolution=32,
        class_names=["cape"],
        checkpoint_key="k",
    )
    session.commit()
    with pytest.raises(generation.InvalidRequest) as info:
        plan(session, custom, count=2, postprocess=["tryon"])
    assert info.value.field == "postprocess" and "'cape'" in str(info.value)


def test_plans_split_categories_and_pick_priority(session, version):
    even = plan(session, version, count=10, seed=5)
    assert even["per_category"] == [["dress", 4], ["skirt", 3], ["hat", 3]]
    assert even["priority"] == "interactive" and even["size"] == 32 and even["seed"] == 5
    assert generation.GenerateParams.model_validate(even).categories_for(2, 6) == [
        "dress",
        "dress",
        "skirt",
        "skirt",
    ]
    blocks = plan(
        session, version, per_category={"skirt": 100, "hat": 0, "dress": 20}, size=128, format="webp"
    )
    assert blocks["per_category"] == [["skirt", 100], ["dress", 20]] and blocks["priority"] == "bulk"
    assert blocks["count"] == 120 and blocks["size"] == 128 and 0 <= blocks["seed"] < 2**30


def test_submit_creates_chunks_and_honours_idempotency(session, version, sent):
    req = GenerationRequest(model=version.id, count=600, seed=1, chunk_size=256)
    job, created = generation.submit(
        session=session,
        spec=req,
        settings=Settings(),
        api_key_id=None,
        idempotency_key="k1",
        request_hash=req.request_hash(),
    )
    session.commit()
    chunks = session.query(WorkUnit).filter_by(job_id=job.id, kind="chunk").order_by(WorkUnit.seq).all()
    assert created and [(c.spec["start"], c.spec["count"]) for c in chunks] == [
        (0, 256),
        (256, 256),
        (512, 88),
    ]
    assert {c.queue for c in chunks} == {"generate.bulk"}
    # one message from the request, whatever the job's size: the dispatch task sends the chunks
    assert sent == [("atelier.dispatch", {"kwargs": {"job_id": job.id}, "queue": "control"})]
    again, created = generation.submit(
        session=session,
        spec=req,
        settings=Settings(),
        api_key_id=None,
        idempotency_key="k1",
        request_hash=req.request_hash(),
    )
    assert again.id == job.id and not created
    other = GenerationRequest(model=version.id, count=601, seed=1)
    with pytest.raises(generation.IdempotencyConflict):
        generation.submit(
            session=session,
            spec=other,
            settings=Settings(),
            api_key_id=None,
            idempotency_key="k1",
            request_hash=other.request_hash(),
        )


def test_webhook_data_is_the_api_job_object(session, version, sent):
    job, _ = generation.submit(
        session=session,
        spec=GenerationRequest(model=version.id, count=3),
        settings=Settings(),
        api_key_id=None,
    )
    session.commit()
    session.refresh(job)
    # the `data` of what is signed (tests/unit/test_webhook_signing.py) is exactly what the API shows
    assert json.loads(webhook_events.body_of(job))["data"] == json.loads(JobOut.of(job).model_dump_json())


class FakeStore:
    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def get(self, key: str) -> bytes:
        return self.objects[key]


def test_manifest_and_zip_stream_from_disk(session, version, sent, db_url, tmp_path, monkeypatch):
    from atelier.core.config import get_settings
    from atelier.generation.finalize import write_archive, write_manifest

    job, _ = generation.submit(
        session=session,
        spec=GenerationRequest(model=version.id, count=6, seed=0),
        settings=Settings(),
        api_key_id=None,
    )
    objects = {}
    for i in (0, 1, 2, 4):  # 3 and 5 missing
        data = f"image {i}".encode()
        key = generation.image_key(job.id, i, "png")
        objects[key] = data
        session.add(
            GeneratedImage(
                job_id=job.id,
                index=i,
                seed=i,
                category="dress",
                key=key,
                sha256=hashlib.sha256(data).hexdigest(),
                format="png",
                width=32,
                height=32,
                size_bytes=len(data),
                model_version_id=version.id,
            )
        )
    session.commit()
    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        summary = write_manifest(job.id, tmp_path / "m.jsonl", 6)
    finally:
        get_settings.cache_clear()
    assert summary["generated"] == 4 and summary["missing"] == [[3, 3], [5, 5]]
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2, 4]
    assert set(lines[0]) >= {
        "index",
        "seed",
        "category",
        "key",
        "sha256",
        "width",
        "height",
        "format",
        "model_version",
    }
    n = write_archive(FakeStore(objects), tmp_path / "m.jsonl", tmp_path / "a.zip")
    assert n == 4
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == ["000000.png", "000001.png", "000002.png", "000004.png", "manifest.jsonl"]
        assert zf.read("000004.png") == b"image 4"
    first = (tmp_path / "a.zip").read_bytes()
    write_archive(FakeStore(objects), tmp_path / "m.jsonl", tmp_path / "b.zip")
    assert io.BytesIO(first).getvalue() == (tmp_path / "b.zip").read_bytes()  # deterministic archive
    session.query(Job).filter_by(id=job.id).one()
