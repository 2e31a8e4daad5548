"""`atelier up` as a user runs it: foreground, restarts dead children, stops cleanly, keeps its data."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from atelier.catalogue.synthetic import catalogue_zip, make_catalogue
from atelier.cli.stack import free_port
from atelier.client import Client
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def processes_using(data_dir: Path) -> list[int]:
    """Every process whose command line or working directory is inside the data dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(data_dir) in cmd or cwd.startswith(str(data_dir)):
            found.append(int(entry.name))
    return found


def start_up(data_dir: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "atelier.cli.main", "up", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: (data_dir / "admin.key").exists() and _healthy(port), timeout=90, what="atelier up")
    return proc


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop_up(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def child_pid(data_dir: Path, name: str) -> int:
    """The main process of a celery child, found by its log file name in the data dir."""
    for pid in processes_using(data_dir):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"celery" in b" ".join(cmd) and name.encode() in b" ".join(cmd):
            return pid
    raise AssertionError(f"no {name} process")


def test_up_restarts_children_stops_cleanly_and_keeps_state(tmp_path):
    data_dir = (tmp_path / "atelier-data").resolve()
    port = free_port()
    proc = start_up(data_dir, port)
    try:
        key = (data_dir / "admin.key").read_text().strip()
        client = Client(f"http://127.0.0.1:{port}", key)
        items = make_catalogue(3, ("dress", "hat"), seed=random.randrange(1 << 30))
        upload = client.upload([("c.zip", catalogue_zip(items))])
        job = client.wait(upload["job"]["id"], timeout=60)
        assert job["status"] == "succeeded"

        # a worker that dies is started again, and keeps serving jobs
        old = child_pid(data_dir, "-Q io")
        os.killpg(os.getpgid(old), signal.SIGKILL)
        new = wait_for(lambda: _other_pid(data_dir, old), timeout=30, what="the io worker to restart")
        assert new != old
        items2 = make_catalogue(1, ("skirt",), seed=random.randrange(1 << 30))
        upload2 = client.upload([("d.zip", catalogue_zip(items2))])
        assert client.wait(upload2["job"]["id"], timeout=60)["status"] == "succeeded"
    finally:
        out = stop_up(proc)
    assert "restarted worker-cpu" in out
    time.sleep(0.5)
    assert processes_using(data_dir) == [], "a child of atelier up outlived it"

    # a second `atelier up` on the same dir finds every key, job and image
    proc = start_up(data_dir, port)
    try:
        assert (data_dir / "admin.key").read_text().strip() == key
        client = Client(f"http://127.0.0.1:{port}", key)
        assert client.job(job["id"])["status"] == "succeeded"
        images = client.get("/v1/catalogue/images", limit=100)["items"]
        assert len(images) == 7
        assert httpx.get(images[0]["url"]).status_code == 200  # the originals are still in S3
    finally:
        stop_up(proc)
    assert processes_using(data_dir) == []


def _other_pid(data_dir: Path, old: int) -> int | None:
    try:
        pid = child_pid(data_dir, "-Q io")
    except AssertionError:
        return None
    return pid if pid != old else None
