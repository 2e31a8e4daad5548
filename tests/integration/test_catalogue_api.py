"""Uploads through the real API, S3 and SQL, and the ingest job on a real Celery worker."""

import io
import random
import zipfile

import httpx
import pytest
from PIL import Image

from atelier.catalogue.synthetic import catalogue_zip, draw_garment, encode, make_catalogue
from tests.integration.conftest import make_key, wait_for

pytestmark = pytest.mark.integration


def seed() -> int:
    return random.randrange(1 << 30)  # every test draws photos no other test uploaded


def count_images(admin) -> int:
    return admin.get("/v1/catalogue/stats")["total"]


def test_health_and_readiness(stack):
    assert httpx.get(f"{stack.api_url}/healthz").json() == {"status": "ok"}

    def ready() -> dict | None:  # a readiness probe polls: a just-started stack may still be warming up
        answer = httpx.get(f"{stack.api_url}/readyz", timeout=15)
        return answer.json() if answer.status_code == 200 else None

    assert wait_for(ready, timeout=60, interval=1, what="readiness")["checks"] == {
        "sql": "ok",
        "broker": "ok",
        "s3": "ok",
    }


def test_no_key_is_401_and_wrong_scope_is_403(stack):
    assert httpx.get(f"{stack.api_url}/v1/jobs").status_code == 401
    bad = httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": "Bearer atl_nope"})
    assert bad.status_code == 401 and "unknown" in bad.json()["detail"]
    reader = make_key(stack, ["read"])
    r = httpx.post(
        f"{stack.api_url}/v1/catalogue/images",
        headers={"Authorization": f"Bearer {reader}"},
        files=[("files", ("a.jpg", b"x"))],
        data={"category": "dress"},
    )
    assert r.status_code == 403 and "catalogue" in r.json()["detail"]
    assert (
        httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {reader}"}).status_code
        == 200
    )


def test_upload_stores_original_and_ingest_job_prepares_it(stack, admin):
    from atelier.core.storage import get_store

    items = make_catalogue(3, ("dress",), seed=seed())
    result = admin.upload([(name, data) for _, name, data in items], category="Dress")
    assert [a["duplicate"] for a in result["accepted"]] == [False] * 3
    assert {a["category"] for a in result["accepted"]} == {"dress"}
    job = admin.wait(result["job"]["id"], timeout=60)
    assert job["status"] == "succeeded" and job["progress"] == {"done": 3, "total": 3, "info": {}}
    listed = admin.get("/v1/catalogue/images", category="dress", limit=500)["items"]
    ours = [i for i in listed if i["id"] in {a["id"] for a in result["accepted"]}]
    assert len(ours) == 3 and all(i["prepared"] for i in ours)
    original = httpx.get(ours[0]["url"])  # presigned URL straight from S3
    assert original.status_code == 200 and Image.open(io.BytesIO(original.content)).size == (96, 96)
    store = get_store()
    prepared = [o["Key"] for o in store.list("catalogue/prepared/256/") if ours[0]["sha256"] in o["Key"]]
    assert Image.open(io.BytesIO(store.get(prepared[0]))).size == (256, 256)


def test_duplicate_upload_returns_the_same_row_and_no_job(stack, admin):
    data = encode(draw_garment("skirt", random.Random(seed())))
    first = admin.upload([("a.jpg", data)], category="skirt")
    before = count_images(admin)
    again = admin.upload([("renamed.jpg", data)], category="skirt")
    assert again["accepted"] == [{**first["accepted"][0], "duplicate": True}]
    assert again["job"] is None
    assert count_images(admin) == before


def test_bad_files_are_rejected_with_reasons_and_nothing_is_stored(stack, admin):
    bomb = io.BytesIO()
    Image.new("RGB", (8000, 8000), (255, 255, 255)).save(bomb, "PNG")
    good = encode(draw_garment("hat", random.Random(seed())))
    before = count_images(admin)
    result = admin.upload(
        [
            ("good.jpg", good),
            ("corrupt.jpg", good[: len(good) // 3]),
            ("notes.txt", b"not an image at all"),
            ("bomb.png", bomb.getvalue()),
        ],
        category="hat",
    )
    reasons = {r["filename"]: r["reason"] for r in result["rejected"]}
    assert set(reasons) == {"corrupt.jpg", "notes.txt", "bomb.png"}
    assert reasons["corrupt.jpg"].startswith("corrupt image")
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["bomb.png"].startswith("decompression bomb")
    assert len(result["accepted"]) == 1
    assert count_images(admin) == before + 1


def test_oversized_file_rejected(stack, admin):
    big = io.BytesIO()
    rng = random.Random(seed())
    Image.frombytes("RGB", (3000, 3000), rng.randbytes(3000 * 3000 * 3)).save(big, "PNG", compress_level=0)
    assert len(big.getvalue()) > 25 * 1024 * 1024
    before = count_images(admin)
    r = httpx.post(
        f"{stack.api_url}/v1/catalogue/images",
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        files=[("files", ("huge.png", big.getvalue()))],
        data={"category": "dress"},
        timeout=60,
    )
    assert r.status_code == 422
    assert r.json()["rejected"][0]["reason"].startswith("file too large")
    assert count_images(admin) == before


def test_zip_of_category_folders(stack, admin):
    items = make_catalogue(2, ("pants", "shoes"), seed=seed())
    result = admin.upload([("catalogue.zip", catalogue_zip(items))])
    assert sorted(a["category"] for a in result["accepted"]) == ["pants", "pants", "shoes", "shoes"]
    assert admin.wait(result["job"]["id"], timeout=60)["status"] == "succeeded"


def test_zip_with_path_traversal_rejected_and_nothing_stored(stack, admin):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("dress/fine.jpg", encode(draw_garment("dress", random.Random(seed()))))
        z.writestr("../../etc/cron.d/evil.jpg", b"x")
    before = count_images(admin)
    result = admin.upload([("evil.zip", buf.getvalue())])
    assert result["accepted"] == [] and "unsafe path" in result["rejected"][0]["reason"]
    assert count_images(admin) == before


def test_photo_without_category_and_bad_category_field(stack, admin):
    data = encode(draw_garment("dress", random.Random(seed())))
    result = admin.upload([("x.jpg", data)])
    assert "no category" in result["rejected"][0]["reason"]
    r = httpx.post(
        f"{stack.api_url}/v1/catalogue/images",
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        files=[("files", ("x.jpg", data))],
        data={"category": "../etc"},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "category"]


def test_catalogue_pagination_and_filters(stack, admin):
    items = make_catalogue(5, ("t-shirt",), seed=seed())
    admin.upload([(n, d) for _, n, d in items], category="t-shirt")
    seen, cursor = [], None
    while True:
        page = admin.get("/v1/catalogue/images", category="t-shirt", limit=2, cursor=cursor)
        assert len(page["items"]) <= 2
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) >= 5
    stats = admin.get("/v1/catalogue/stats")
    assert stats["per_category"]["t-shirt"] == len(seen)
    assert sum(stats["per_day"].values()) == stats["total"]
    r = httpx.get(
        f"{stack.api_url}/v1/catalogue/images",
        params={"since": "yesterday"},
        headers={"Authorization": f"Bearer {stack.admin_key}"},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]
    assert admin.get("/v1/catalogue/images", since="2999-01-01")["items"] == []
