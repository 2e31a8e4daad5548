"""The catalogue's other uses through the real API, S3, SQL and Celery worker: dated uploads and a trend
report, a try-on preview of a stored generated image, and DeepFashion-layout imports by the CLI and
over HTTP as an ingest job."""

from __future__ import annotations

import html
import io
import json
import random
import re

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from atelier.catalogue.synthetic import (
    catalogue_zip,
    draw_garment,
    encode,
    write_deepfashion_layout,
    zip_folder,
)
from atelier.cli.main import cli

pytestmark = pytest.mark.integration


def test_dated_uploads_and_a_trend_report_with_charts(stack, admin):
    rng = random.Random(random.randrange(1 << 30))
    for month in range(1, 9):  # 2024-01 .. 2024-08: skirts rise from 1 in 7 to 8 in 14
        items = [
            (cat, f"{cat}-{month}-{i}-{rng.random():.9f}.jpg", encode(draw_garment(cat, rng, 64)))
            for cat, n in (("dress", 3), ("pants", 3), ("skirt", month))
            for i in range(n)
        ]
        result = admin.upload([("month.zip", catalogue_zip(items))], captured_at=f"2024-{month:02d}-15")
        assert len(result["accepted"]) == len(items)
    stats = admin.get("/v1/catalogue/stats", period="month")
    assert stats["per_period"]["2024-03"] == {"dress": 3, "pants": 3, "skirt": 3}

    window = {"since": "2024-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}
    r = admin.http.post("/v1/trend-reports", json={"period": "month", "horizon": 99, **window})
    assert (
        r.status_code == 422
        and "ATELIER_TREND_MAX_HORIZON" in r.text
        and r.json()["detail"][0]["loc"] == ["body", "horizon"]
    )
    job = admin.post("/v1/trend-reports", json={"period": "month", "horizon": 2, **window})
    assert job["kind"] == "trend" and job["status"] == "queued"
    done = admin.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["summary"]["rising_categories"] == ["skirt"]
    body = admin.get(f"/v1/trend-reports/{job['id']}")
    report = body["report"]
    assert report["periods"] == [f"2024-{m:02d}" for m in range(1, 9)]
    assert report["forecast"]["periods"] == ["2024-09", "2024-10"]
    assert report["category_mix"]["counts"]["skirt"] == list(range(1, 9))
    skirt = report["forecast"]["category_mix"]["skirt"]
    assert skirt["mean"][1] > skirt["mean"][0] > report["category_mix"]["shares"]["skirt"][-3]
    assert set(body["charts"]) == {"mix", "colours", "clusters"}
    png = httpx.get(body["charts"]["mix"], timeout=30)
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).format == "PNG"
    with httpx.Client(base_url=stack.api_url) as ui:  # the gallery's page of the same report
        ui.post("/ui/login", data={"api_key": stack.admin_key, "next": "/ui/trends"})
        page = ui.get(f"/ui/trends/{job['id']}")
        assert page.status_code == 200
        assert re.search(r"<td>skirt</td><td>[^<]+</td><td class=\"trend rising\">rising</td>", page.text)
        charts = re.findall(r'<img class="chart-img" src="([^"]+)"', page.text)
        assert len(charts) == 3 and all(
            u.startswith(body["charts"]["mix"].split("/trends/")[0]) for u in charts
        )
        shown = httpx.get(html.unescape(charts[1]), timeout=30)  # a presigned URL that works
        assert shown.status_code == 200 and Image.open(io.BytesIO(shown.content)).format == "PNG"
        assert f'href="/ui/trends/{job["id"]}"' in ui.get("/ui/trends").text
    future = admin.http.post(
        "/v1/catalogue/images",
        files=[("files", ("a.jpg", b"x"))],
        data={"category": "dress", "captured_at": "2999-01-01"},
    )
    assert future.status_code == 422 and future.json()["detail"][0]["loc"] == ["body", "captured_at"]


def test_tryon_preview_of_a_stored_generated_image(stack, admin):
    from atelier.core import jobs
    from atelier.core.db import session_scope
    from atelier.core.models import GeneratedImage
    from atelier.core.storage import get_store
    from atelier.generation.postprocess import encode as encode_generated
    from atelier.generation.postprocess import read_provenance

    garment = draw_garment("pants", random.Random(3), 128)
    data = encode_generated(garment, "png", provenance={"seed": 11, "generator": "atelier"})
    with session_scope() as session:  # a finished generation job with one image, without training a model
        job = jobs.create_job(session=session, kind="generate", params={}, total=1)
        job.status = jobs.SUCCEEDED
        key = f"generated/{job.id}/0.png"
        get_store().put(key, data, content_type="image/png")
        row = dict(job_id=job.id, index=0, seed=11, category="pants", key=key, sha256="0" * 64, format="png")
        session.add(GeneratedImage(**row, width=128, height=128, size_bytes=len(data)))
        job_id = job.id
    r = admin.http.get(f"/v1/jobs/{job_id}/images/0/tryon", params={"template": "curvy-s"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    meta = read_provenance(r.content)
    assert meta["region"] == "legs" and meta["template"] == "curvy-s" and meta["source_seed"] == "11"
    assert meta["job_id"] == job_id and Image.open(io.BytesIO(r.content)).size == (240, 400)
    bad = admin.http.get(f"/v1/jobs/{job_id}/images/0/tryon", params={"template": "giant"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "template"]
    assert admin.http.get(f"/v1/jobs/{job_id}/images/5/tryon").status_code == 404


def test_deepfashion_import_maps_categories_reports_bad_lines_and_resumes(stack, admin, tmp_path):
    root = tmp_path / "deepfashion"
    write_deepfashion_layout(root, 2, seed=random.randrange(1 << 30))
    with (root / "Anno/list_category_img.txt").open("a") as f:
        f.write("img/missing/img_1.jpg 2\nnot-a-line\n")
    state = tmp_path / "import.done"
    args = [
        "catalogue",
        "import",
        "--format",
        "deepfashion",
        str(root),
        "--api",
        stack.api_url,
        "--state",
        str(state),
    ]
    env = {"ATELIER_API_KEY": stack.admin_key}
    first = CliRunner().invoke(cli, args, env=env)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["accepted"] == 8 and summary["missing"] == 1 and summary["skipped_lines"] >= 1
    assert summary["per_category"] == {"dress": 2, "pants": 2, "skirt": 2, "t-shirt": 2}
    assert "list_category_img.txt:12: expected 2 fields, found 1" in first.stderr
    again = CliRunner().invoke(cli, args, env=env)
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    # the 8 imported photos are skipped; the missing one is tried (and reported) again
    assert resumed["resumed_from"] == 8 and resumed["accepted"] == 0 and resumed["missing"] == 1


def test_deepfashion_import_over_http_maps_reports_bad_lines_and_never_duplicates(stack, admin, tmp_path):
    from atelier.core.storage import get_store

    root = tmp_path / "deepfashion"
    write_deepfashion_layout(root, 2, seed=random.randrange(1 << 30))
    with (root / "Anno/list_category_img.txt").open("a") as f:
        f.write("img/missing/img_1.jpg 2\nnot-a-line\n")
    (root / "img/Drawn_Tee_1/img_00000002.jpg").write_bytes(b"not a photo at all")  # fails validation
    data = zip_folder(root, "DeepFashion/")  # a ZIP with the layout one folder down
    before = admin.get("/v1/catalogue/stats")["total"]

    def submit() -> dict:
        r = admin.http.post(
            "/v1/catalogue/imports", files={"file": ("deepfashion.zip", data)}, data={"format": "deepfashion"}
        )
        assert r.status_code == 202, r.text
        assert r.json()["kind"] == "ingest" and r.json()["status"] == "queued"
        return admin.wait(r.json()["id"], timeout=120)

    job = submit()
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert job["progress"]["done"] == job["progress"]["total"] == result["mapped"] == 9
    assert (result["accepted"], result["duplicates"], result["rejected"], result["missing"]) == (7, 0, 1, 1)
    assert result["per_category"] == {"dress": 2, "pants": 2, "skirt": 2, "t-shirt": 1}
    assert "Anno/list_category_img.txt:12: expected 2 fields, found 1" in result["problems"]
    assert result["rejections"][0]["filename"] == "Drawn_Tee_1__img_00000002.jpg"
    assert admin.get("/v1/catalogue/stats")["total"] == before + 7
    skirts = admin.get("/v1/catalogue/images", category="skirt", limit=500)["items"]
    ours = [i for i in skirts if i["filename"].startswith("Drawn_Skirt_")]
    assert len(ours) >= 2 and all(i["prepared"] for i in ours)
    photo = Image.open(io.BytesIO(httpx.get(ours[0]["url"]).content))
    assert 96 <= photo.width <= 96 * 1.15  # cropped to its box, not the 200x240 canvas
    assert not get_store().exists(job["params"]["source"]["archive_key"])  # removed once imported

    again = submit()  # the same ZIP again: every photo is a duplicate, nothing is stored twice
    assert again["status"] == "succeeded"
    assert (again["result"]["accepted"], again["result"]["duplicates"]) == (0, 7)
    assert admin.get("/v1/catalogue/stats")["total"] == before + 7

    refused = admin.http.post("/v1/catalogue/imports", files={"file": ("x.zip", catalogue_zip([]))})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "file"]
    assert "list_category_cloth.txt" in refused.json()["detail"][0]["msg"]
    bad_map = admin.http.post(
        "/v1/catalogue/imports", files={"file": ("d.zip", data)}, data={"mapping": '{"Dress": 3}'}
    )
    assert bad_map.status_code == 422 and bad_map.json()["detail"][0]["loc"] == ["body", "mapping"]
