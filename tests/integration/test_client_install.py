"""The client as another team gets it: `pip install <the repository>` with no extras into a fresh virtual
environment outside the repository (no torch, Celery, SQLAlchemy or boto3 in it), then a script of
theirs, written there, drives the whole flow against the live stack with typed results: upload a drawn
catalogue, train a tiny model, wait, list models, generate a batch, page its images, download them
all and check each sha256, read the manifest, and ask the same of the async client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

CATS = ["dress", "hat", "pants"]
SERVER_PACKAGES = ("torch", "celery", "sqlalchemy", "boto3", "fastapi", "PIL")

SCRIPT = """
import asyncio
import hashlib
import json
import sys
from pathlib import Path

from atelier.client import (
    AsyncClient, CatalogueImage, Client, DownloadReport, FolderUpload, GeneratedImage, GenerationRequest, Job,
    ManifestEntry, ModelVersion, TrainingRequest,
)

catalogue, out = Path(sys.argv[1]), Path(sys.argv[2])
categories = sorted(p.name for p in catalogue.iterdir())

with Client() as client:  # ATELIER_API_URL and ATELIER_API_KEY
    upload = client.catalogue.upload_folder(catalogue, batch=10)
    assert isinstance(upload, FolderUpload) and upload.accepted + upload.duplicates == 24, upload
    for job in upload.jobs:
        assert client.jobs.wait(job.id, timeout=120).status == "succeeded"
    listed = list(client.catalogue.list(category=categories[0], page_size=5))
    assert all(isinstance(i, CatalogueImage) for i in listed) and len(listed) >= 8

    job = client.training.submit(
        TrainingRequest(preset="tiny", resolution=16, steps=10, categories=categories, promote="never")
    )
    trained = client.training.wait(job.id, timeout=600)
    assert isinstance(trained, Job) and trained.status == "succeeded", trained.error
    version_id = trained.result["model_version"]
    versions = list(client.models.list())
    assert all(isinstance(v, ModelVersion) for v in versions) and version_id in [v.id for v in versions]
    version = client.models.get(version_id)
    assert version.class_names == categories and version.resolution == 16

    batch = client.generation.submit(
        GenerationRequest(model=version_id, per_category={c: 5 for c in categories}, seed=11, format="png")
    )
    done = client.jobs.wait(batch.id, timeout=300)
    assert done.status == "succeeded" and done.progress.done == 15
    images = list(client.generation.images(done.id, page_size=4))  # four pages
    assert all(isinstance(i, GeneratedImage) for i in images)
    assert [i.index for i in images] == list(range(15)) and [i.seed for i in images] == list(range(11, 26))
    report = client.generation.download(done.id, out, workers=4)
    assert isinstance(report, DownloadReport) and (report.downloaded, report.failed) == (15, 0), report
    for image in images:
        assert hashlib.sha256((out / image.filename).read_bytes()).hexdigest() == image.sha256
    manifest = client.generation.manifest(done.id)
    assert all(isinstance(e, ManifestEntry) for e in manifest)
    assert {e.key: e.sha256 for e in manifest} == {i.key: i.sha256 for i in images}


async def the_async_client(job_id):
    async with AsyncClient() as client:
        job = await client.jobs.get(job_id)
        return job.status, [i.index async for i in client.generation.images(job_id, page_size=6)]


status, indexes = asyncio.run(the_async_client(done.id))
assert status == "succeeded" and indexes == list(range(15))
print(json.dumps({"model": version_id, "job": done.id, "images": len(images), "downloaded": report.downloaded,
                  "bytes": report.bytes, "types": sorted({type(x).__name__ for x in (upload, trained, version,
                  images[0], report, manifest[0])})}))
"""


# what is under test is the package, not the database: one backend is enough
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_the_client_installs_alone_and_drives_a_full_flow(stack, tmp_path):
    from atelier.catalogue.synthetic import make_catalogue

    # the distribution's files, copied: the build writes its build/ and egg-info there, not in the tree
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(REPO / "atelier", src / "atelier", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stdout + install.stderr
    installed_in = time.monotonic() - t0

    probe = "import importlib.util, json; print(json.dumps([m for m in %r if importlib.util.find_spec(m)]))"
    present = subprocess.run(
        [str(python), "-c", probe % (SERVER_PACKAGES,)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert json.loads(present.stdout) == [], f"the client-only install brought {present.stdout}"
    version = subprocess.run([str(venv / "bin" / "atelier"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "atelier, version" in version.stdout

    catalogue = tmp_path / "catalogue"
    for category, name, data in make_catalogue(8, tuple(CATS), seed=int(time.time())):
        (catalogue / category).mkdir(parents=True, exist_ok=True)
        (catalogue / category / name).write_bytes(data)
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATELIER_", "PYTHON"))}
    env.update(ATELIER_API_URL=stack.api_url, ATELIER_API_KEY=stack.admin_key)
    t1 = time.monotonic()
    flow = subprocess.run(
        [str(python), str(script), str(catalogue), str(tmp_path / "designs")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert flow.returncode == 0, flow.stdout + flow.stderr
    summary = json.loads(flow.stdout.strip().splitlines()[-1])
    assert summary["images"] == summary["downloaded"] == 15
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file())
    print(
        f"client-only venv: installed in {installed_in:.1f} s, {size / 1e6:.0f} MB; "
        f"flow in {time.monotonic() - t1:.1f} s: {summary}"
    )
