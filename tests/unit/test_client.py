"""The client's retry policy against a real (flaky) HTTP server on a loopback port."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atelier.client import ApiError, Client


@pytest.fixture
def flaky():  # noqa: ANN201
    """Answers 503 to the first two requests of each path, then 200 (or 404 for /missing)."""
    seen: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen[self.path] = seen.get(self.path, 0) + 1
            status = 503 if seen[self.path] <= 2 else 200
            if self.path.startswith("/missing"):
                status = 404
            body = json.dumps({"detail": f"status {status}", "items": [], "next_cursor": None}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_idempotent_calls_are_retried_and_others_are_not(flaky):
    url, seen = flaky
    client = Client(url, "k", backoff=0.01)
    assert client.get("/v1/jobs/a")["detail"] == "status 200"
    assert seen["/v1/jobs/a"] == 3
    with pytest.raises(ApiError, match="503"):
        client.post("/v1/generation-jobs", json={})  # no Idempotency-Key: a repeat could submit twice
    assert seen["/v1/generation-jobs"] == 1
    job = client.post("/v1/training-jobs", json={}, headers={"Idempotency-Key": "x"})
    assert job["detail"] == "status 200" and seen["/v1/training-jobs"] == 3


def test_a_4xx_is_not_retried_and_names_the_detail(flaky):
    url, seen = flaky
    with pytest.raises(ApiError) as exc:
        Client(url, "k", backoff=0.01).get("/missing")
    assert exc.value.status_code == 404 and "GET /missing -> 404: status 404" in str(exc.value)
    assert seen["/missing"] == 1


def test_demo_contact_sheet_shows_every_design_in_index_order(tmp_path):
    from PIL import Image

    from atelier.cli.demo import contact_sheet

    colours = ["red", "green", "blue", "yellow", "white"] * 3
    for i, colour in enumerate(colours):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
    with Image.open(contact_sheet(tmp_path, tmp_path / "sheet.png", cell=16, columns=12)) as sheet:
        assert sheet.size == (12 * 16, 2 * 16)
        assert sheet.getpixel((8, 8)) == (255, 0, 0) and sheet.getpixel((16 * 2 + 8, 8)) == (0, 0, 255)
        assert sheet.getpixel((8, 16 + 8)) == (0, 0, 255)  # design 12 opens the second row
        assert sheet.getpixel((16 * 2 + 8, 16 + 8)) == (255, 255, 255)  # design 14
