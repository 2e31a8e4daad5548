"""atelier.client against a real HTTP server on a loopback port that answers as the API would (bodies
from the client's own contract models): typed results, typed errors naming the field, retries only
where a repeat is safe, the event stream, waits, and downloads that resume and check sha256. The
async client runs the same calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from atelier.client import (
    ApiUnreachable,
    AsyncClient,
    Client,
    Conflict,
    GenerationRequest,
    InvalidRequest,
    Job,
    NotFound,
    RateLimited,
    ServerError,
    WaitTimeout,
)


def job_body(job_id: str = "j1", status: str = "queued", done: int = 0, total: int = 4) -> dict[str, Any]:
    return {
        "id": job_id,
        "kind": "generate",
        "status": status,
        "priority": "interactive",
        "progress": {"done": done, "total": total, "info": {}},
        "eta_seconds": None,
        "created_at": "2026-11-27T02:00:00Z",
        "started_at": None,
        "finished_at": "2026-11-27T02:01:00Z" if status in ("succeeded", "failed") else None,
        "params": {"count": total},
        "result": None,
        "error": None,
        "cancel_requested": False,
        "deliveries": 1,
    }


FILES = {f"/s3/{i:06d}.png": bytes([i]) * (1000 + i) for i in range(5)}


class Api:
    """What the fake server answers; `seen` lists (method, path, headers) of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.fail: dict[str, list[int]] = {}  # path -> statuses to answer first, one per request
        self.lock = threading.Lock()

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        with self.lock:
            self.seen.append((h.command, path, {k.lower(): v for k, v in h.headers.items()}))
            queued = self.fail.get(path)
            first = queued.pop(0) if queued else None
        if first is not None:
            extra = {"Retry-After": "0"} if first == 429 else {}
            return send(h, first, {"detail": f"status {first}"}, extra)
        if path.startswith("/s3/"):
            return send_file(
                h, FILES.get(path.replace("bad", "")), h.headers.get("Range"), corrupt="bad" in path
            )
        if path == "/v1/generation-jobs":
            req = json.loads(body)
            if req.get("count") == 0:
                detail = [{"loc": ["body", "count"], "msg": "give count", "type": "value_error"}]
                return send(h, 422, {"detail": detail})
            if h.headers.get("Idempotency-Key") == "used":
                return send(h, 409, {"detail": "Idempotency-Key was already used for job j0"})
            return send(h, 202, job_body())
        if path == "/v1/jobs/j1":
            return send(h, 200, job_body(status="running", done=2))
        if path == "/v1/jobs/j1/stream":
            return send_events(
                h,
                [job_body(status="running", done=d) for d in (1, 1, 3)]
                + [job_body(status="succeeded", done=4)],
            )
        if path == "/v1/jobs/slow/stream":
            return send_events(h, [job_body("slow", status="running", done=1)])
        if path == "/v1/jobs/slow":
            return send(h, 200, job_body("slow", status="running", done=1))
        if path == "/v1/jobs/j1/images":
            cursor = int(dict(p.split("=") for p in query.split("&")).get("cursor", 0))
            names = sorted(FILES)
            items = [image(i, names[i], h) for i in range(cursor, min(cursor + 2, len(names)))]
            nxt = str(cursor + 2) if cursor + 2 < len(names) else None
            return send(h, 200, {"items": items, "next_cursor": nxt})
        if path == "/v1/keys":
            return send(h, 503, {"detail": "busy"})
        send(h, 404, {"detail": f"no route {path}"})


def image(i: int, name: str, h: BaseHTTPRequestHandler) -> dict[str, Any]:
    host = h.headers["Host"]
    data = FILES[name]
    return {
        "id": f"j1:{i}", "index": i, "seed": 7 + i, "category": "dress", "key": f"generated/j1/{i:06d}.png",
        "url": f"http://{host}{name}", "sha256": hashlib.sha256(data).hexdigest(), "width": 16, "height": 16,
        "format": "png", "size_bytes": len(data), "tryon_url": None,
    }  # fmt: skip


def send(h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def send_file(h: BaseHTTPRequestHandler, data: bytes | None, range_: str | None, corrupt: bool) -> None:
    if data is None:
        return send(h, 404, {"detail": "no such object"})
    if corrupt:
        data = b"x" + data[1:]
    start = int(range_.removeprefix("bytes=").rstrip("-")) if range_ else 0
    h.send_response(206 if start else 200)
    h.send_header("Content-Length", str(len(data) - start))
    h.end_headers()
    h.wfile.write(data[start:])


def send_events(h: BaseHTTPRequestHandler, jobs: list[dict]) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.end_headers()
    for job in jobs:
        h.wfile.write(f"event: job\ndata: {json.dumps(job)}\n\n".encode())
        h.wfile.flush()
    if jobs[-1]["status"] == "running":  # a stream that goes quiet: the wait's deadline must end it
        time.sleep(1.5)


@pytest.fixture
def api():
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            state.answer(self)

        do_POST = do_PUT = do_GET

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def test_results_are_typed_and_read_like_the_dicts_the_api_sends(api):
    url, _ = api
    with Client(url, "k") as client:
        job = client.jobs.get("j1")
    assert isinstance(job, Job) and job.status == "running" and job.progress.done == 2
    assert job["progress"]["done"] == 2 and not job.ended
    assert job.created_at.year == 2026


def test_errors_are_typed_and_name_the_field(api, monkeypatch):
    url, state = api
    with Client(url, "k", backoff=0.01) as client:
        with pytest.raises(InvalidRequest) as bad:
            client.generation.submit(count=0)
        assert bad.value.status_code == 422 and bad.value.field == "count"
        assert "body.count: give count" in str(bad.value)
        with pytest.raises(Conflict, match="Idempotency-Key") as conflict:
            client.generation.submit(GenerationRequest(count=3), idempotency_key="used")
        assert conflict.value.status_code == 409
        with pytest.raises(NotFound) as missing:
            client.jobs.get("nope")
        assert missing.value.detail == "no route /v1/jobs/nope"
    monkeypatch.delenv("ATELIER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="no API key"):
        Client(url, "")


def test_a_submit_is_retried_with_one_idempotency_key_and_a_key_creation_is_not(api):
    url, state = api
    state.fail["/v1/generation-jobs"] = [503, 429]
    with Client(url, "k", backoff=0.01) as client:
        job = client.generation.submit(count=4, seed=7)
        assert job.id == "j1"
        sent = [h for m, p, h in state.seen if p == "/v1/generation-jobs"]
        assert len(sent) == 3 and len({h["idempotency-key"] for h in sent}) == 1  # one key, three tries
        with pytest.raises(ServerError):
            client.keys.create("k2", ["read"])  # a repeat would make a second key
    assert [p for _, p, _ in state.seen].count("/v1/keys") == 1


def test_retries_stop_and_rate_limits_carry_retry_after(api):
    url, state = api
    state.fail["/v1/jobs/j1"] = [429] * 3
    with Client(url, "k", retries=2, backoff=0.01) as client, pytest.raises(RateLimited) as limited:
        client.jobs.get("j1")
    assert limited.value.retry_after == 0.0 and [p for _, p, _ in state.seen].count("/v1/jobs/j1") == 3


def test_an_unreachable_api_is_one_typed_error_after_the_retries():
    with Client("http://127.0.0.1:9", "k", retries=1, backoff=0.01) as client:  # port 9: discard, closed
        t0 = time.monotonic()
        with pytest.raises(ApiUnreachable, match="cannot reach the API"):
            client.jobs.get("j1")
        assert time.monotonic() - t0 < 5


def test_wait_follows_the_stream_and_reports_each_change_once(api):
    url, _ = api
    seen: list[tuple[str, int]] = []
    with Client(url, "k") as client:
        job = client.jobs.wait("j1", on_update=lambda j: seen.append((j.status, j.progress.done)))
    assert job.status == "succeeded" and job.ok
    assert seen == [("running", 1), ("running", 3), ("succeeded", 4)]


def test_wait_gives_up_at_its_timeout_with_the_job(api):
    url, _ = api
    with Client(url, "k") as client, pytest.raises(WaitTimeout) as timed_out:
        client.jobs.wait("slow", timeout=0.5, interval=0.1)
    assert timed_out.value.job.status == "running" and isinstance(timed_out.value, TimeoutError)


def test_images_page_lazily_and_download_resumes_and_checks_sha256(api, tmp_path: Path):
    url, state = api
    with Client(url, "k") as client:
        images = list(client.generation.images("j1", page_size=2))
        assert [i.index for i in images] == [0, 1, 2, 3, 4]
        assert [p for _, p, _ in state.seen].count("/v1/jobs/j1/images") == 3  # pages of 2
        (tmp_path / "000001.png").write_bytes(FILES["/s3/000001.png"])  # already there: skipped
        part = tmp_path / "000002.png.part"
        part.write_bytes(FILES["/s3/000002.png"][:500])  # half there: resumed
        report = client.generation.download("j1", tmp_path, workers=3)
    assert (report.downloaded, report.skipped, report.failed) == (4, 1, 0)
    assert report.bytes == sum(len(d) for d in FILES.values()) - len(FILES["/s3/000001.png"]) - 500
    ranges = [h.get("range") for _, p, h in state.seen if p == "/s3/000002.png"]
    assert ranges == ["bytes=500-"] and not part.exists()
    for name, data in FILES.items():
        assert (tmp_path / name.rsplit("/", 1)[-1]).read_bytes() == data


def test_a_file_that_fails_its_sha256_is_reported_and_not_kept(api, tmp_path: Path):
    from atelier.client import _shared

    url, _ = api
    with Client(url, "k") as client:
        target = _shared.Target(
            f"{url}/s3/bad000003.png", tmp_path / "3.png", hashlib.sha256(FILES["/s3/000003.png"]).hexdigest()
        )
        outcome = client.fetch_with_retries(target)
    assert outcome[0] == "failed" and "ChecksumMismatch" in outcome[2]
    assert not (tmp_path / "3.png").exists() and not (tmp_path / "3.png.part").exists()


def test_the_async_client_runs_the_same_calls(api, tmp_path: Path):
    url, state = api
    state.fail["/v1/generation-jobs"] = [503]

    async def main() -> tuple:
        async with AsyncClient(url, "k", backoff=0.01) as client:
            job = await client.generation.submit(count=4)
            done = await client.jobs.wait(job.id)
            images = [i async for i in client.generation.images(job.id, page_size=2)]
            report = await client.generation.download(job.id, tmp_path, workers=2)
            try:
                await client.generation.submit(count=0)
            except InvalidRequest as exc:
                field = exc.field
            return done, images, report, field

    done, images, report, field = asyncio.run(main())
    assert done.status == "succeeded" and len(images) == 5 and field == "count"
    assert report.downloaded == 5 and report.failed == 0
    for name, data in FILES.items():
        assert (tmp_path / name.rsplit("/", 1)[-1]).read_bytes() == data
