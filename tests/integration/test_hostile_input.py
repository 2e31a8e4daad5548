"""A hostile corpus against the real API (uvicorn, SQL, S3, Redis): oversized and endless bodies with and
without a key, archive bombs, lying, unsupported, nested and traversal archives, pixel bombs, truncated,
empty and disguised files, photos with every kind of metadata. For each: the status, the reason,
nothing stored, and the API still answering. Limits are the bare stack's (tests/integration/conftest.py)."""

from __future__ import annotations

import io
import select
import socket
import time
import zipfile
from urllib.parse import urlsplit

import httpx
import pytest

from tests import hostile
from tests.integration.conftest import BARE_ENV, make_key

pytestmark = pytest.mark.integration

MAX_REQUEST = int(BARE_ENV["ATELIER_MAX_REQUEST_BYTES"])
DRAIN = 64 * 1024 * 1024  # ATELIER_OVERSIZE_DRAIN_BYTES' default


def raw_post(
    stack, path: str, headers: dict[str, str], body_chunks, *, timeout: float = 10.0
) -> tuple[int, bytes, int]:  # noqa: ANN001
    """POST over a bare socket, sending body chunks until the server answers; returns (status, response
    body, bytes sent). A server that reads the whole body first would make this take forever."""
    parts = urlsplit(stack.api_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    )
    sock.sendall(head.encode())
    sent, deadline = 0, time.monotonic() + timeout
    response = b""
    try:
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer after sending {sent} bytes")
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < _length(response):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    finally:
        sock.close()
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1], sent


def _length(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def endless(chunk_size: int = 64 * 1024, *, chunked: bool = False, first: bytes = b""):  # noqa: ANN201
    def frame(data: bytes) -> bytes:
        return (f"{len(data):x}\r\n".encode() + data + b"\r\n") if chunked else data

    if first:
        yield frame(first)
    piece = b"x" * chunk_size
    while True:
        yield frame(piece)


# the start of a well-formed multipart body whose one file then never ends
FILE_PART = (
    b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)


@pytest.fixture(scope="module")
def keys(bare_stack) -> dict[str, str]:  # noqa: ANN001
    return {scope: make_key(bare_stack, [scope]) for scope in ("read", "submit", "catalogue", "admin")}


def healthy(stack) -> bool:  # noqa: ANN001
    return httpx.get(f"{stack.api_url}/healthz", timeout=5).status_code == 200


MULTIPART = "multipart/form-data; boundary=xyz"


@pytest.mark.parametrize("path", ["/v1/catalogue/images", "/v1/generation-jobs"])
def test_no_key_and_a_huge_body_gets_401_before_the_body_is_read(bare_stack, path):
    t0 = time.monotonic()
    status, body, sent = raw_post(
        bare_stack, path, {"Content-Type": MULTIPART, "Content-Length": str(2 * 1024**3)}, endless()
    )
    assert status == 401 and b"missing API key" in body
    assert sent < 32 * 1024 * 1024 and time.monotonic() - t0 < 5
    status, body, _ = raw_post(
        bare_stack, path, {"Authorization": "Bearer atl_guess", "Content-Length": str(2 * 1024**3)}, endless()
    )
    assert status == 401 and b"unknown" in body
    assert healthy(bare_stack)


def test_a_declared_body_over_the_limit_gets_413_naming_the_setting(bare_stack, keys):
    auth = {"Authorization": f"Bearer {keys['catalogue']}"}
    status, body, sent = raw_post(
        bare_stack,
        "/v1/catalogue/images",
        {**auth, "Content-Type": MULTIPART, "Content-Length": str(2 * 1024**3)},
        endless(),
    )
    assert status == 413 and b"ATELIER_MAX_REQUEST_BYTES" in body and sent < 32 * 1024 * 1024
    auth = {"Authorization": f"Bearer {keys['submit']}"}
    status, body, _ = raw_post(
        bare_stack,
        "/v1/generation-jobs",
        {**auth, "Content-Type": "application/json", "Content-Length": str(5 * 1024**2)},
        endless(),
    )
    assert status == 413 and b"ATELIER_MAX_JSON_BODY_BYTES" in body
    assert healthy(bare_stack)


FORTY_MB = b'{"count": 1, "seed": "' + b"7" * (40 * 1024 * 1024) + b'"}'


def _urllib_post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _requests_post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    import requests

    r = requests.post(url, data=body, headers=headers, timeout=30)
    return r.status_code, r.json()


def _httpx_post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    r = httpx.post(url, content=body, headers=headers, timeout=30)
    return r.status_code, r.json()


@pytest.mark.parametrize(
    "client", [_urllib_post, _requests_post, _httpx_post], ids=["urllib", "requests", "httpx"]
)
def test_a_40_mb_json_body_gets_a_413_that_ordinary_clients_can_read(bare_stack, keys, client):
    """Ordinary clients send the whole body before they read: the API answers, then drains the rest, so
    they see the 413 and its reason rather than a reset connection."""
    headers = {"Authorization": f"Bearer {keys['submit']}", "Content-Type": "application/json"}
    for _ in range(3):  # a reset would show up as an exception here, on any of the tries
        status, body = client(f"{bare_stack.api_url}/v1/generation-jobs", headers, FORTY_MB)
        assert status == 413 and "ATELIER_MAX_JSON_BODY_BYTES" in body["detail"]
    no_key = {"Content-Type": "application/json"}
    status, body = client(
        f"{bare_stack.api_url}/v1/generation-jobs", no_key, b'{"count": 1}' + b" " * 900_000
    )
    assert status == 401 and "missing API key" in body["detail"]
    assert healthy(bare_stack)


def test_a_chunked_body_over_the_limit_gets_a_readable_413(bare_stack, keys):
    def chunks():
        for _ in range(40):
            yield b" " * (1024 * 1024)

    headers = {"Authorization": f"Bearer {keys['submit']}", "Content-Type": "application/json"}
    r = httpx.post(f"{bare_stack.api_url}/v1/generation-jobs", content=chunks(), headers=headers, timeout=30)
    assert r.status_code == 413 and "ATELIER_MAX_JSON_BODY_BYTES" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "scope", "ctype", "limit", "setting"),
    [
        ("/v1/generation-jobs", "submit", "application/json", 1024 * 1024, b"ATELIER_MAX_JSON_BODY_BYTES"),
        ("/v1/catalogue/images", "catalogue", MULTIPART, MAX_REQUEST, b"ATELIER_MAX_REQUEST_BYTES"),
    ],
)
def test_an_endless_chunked_body_is_cut_at_the_limit(bare_stack, keys, path, scope, ctype, limit, setting):
    headers = {
        "Authorization": f"Bearer {keys[scope]}",
        "Content-Type": ctype,
        "Transfer-Encoding": "chunked",
    }
    first = FILE_PART if ctype == MULTIPART else b'{"count": "'
    status, body, sent = raw_post(bare_stack, path, headers, endless(chunked=True, first=first))
    # the body never ends: an answer at all means the API stopped reading (after the limit it drains
    # up to ATELIER_OVERSIZE_DRAIN_BYTES, and loopback socket buffers absorb a few MB more, so `sent`
    # is only bounded loosely)
    assert status == 413 and setting in body
    assert sent < limit + DRAIN + 32 * 1024 * 1024
    assert healthy(bare_stack)


def _originals(stack) -> set[str]:  # noqa: ANN001
    from atelier.core.storage import ObjectStore

    return {o["Key"] for o in ObjectStore(stack.settings).list("catalogue/originals/")}


def _upload(stack, key: str, name: str, data: bytes, category: str | None = "dress") -> httpx.Response:  # noqa: ANN001
    form = {"category": category} if category else {}
    return httpx.post(
        f"{stack.api_url}/v1/catalogue/images",
        headers={"Authorization": f"Bearer {key}"},
        files=[("files", (name, data))],
        data=form,
        timeout=60,
    )


def _mixed_total_bomb() -> bytes:
    """Five members of 1.5 MB each, within the per-file cap and the ratio cap (random head, zero tail):
    the archive as a whole declares more than ATELIER_MAX_ARCHIVE_INFLATED_BYTES."""
    import random

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(5):
            z.writestr(f"dress/{i}.jpg", random.Random(i).randbytes(40_000) + bytes(1_500_000))
    return buf.getvalue()


REFUSED = [
    ("empty.jpg", b"", "empty file"),
    ("truncated.jpg", hostile.photo(11)[:500], "corrupt image"),
    ("pixel-bomb.png", hostile.pixel_bomb_png(), "ATELIER_MAX_IMAGE_PIXELS"),
    ("disguised.jpg", hostile.gif_named_jpeg(), "not an image"),
    ("script.png", b"#!/bin/sh\nrm -rf /\n" * 20, "not an image"),
    ("big.jpg", hostile.photo(12) + bytes(3 * 1024 * 1024), "ATELIER_MAX_UPLOAD_BYTES"),
    ("total-bomb.zip", _mixed_total_bomb(), "ATELIER_MAX_ARCHIVE_INFLATED_BYTES"),
    ("nested.zip", hostile.nested_zip(), "nested archive"),
    ("traversal.zip", hostile.traversal_zip(), "unsafe path"),
    ("encrypted.zip", hostile.encrypted_member_zip(), "encrypted"),
    ("overlap.zip", hostile.overlapping_bomb(200), ""),
    ("fake.zip", b"PK\x03\x04" + b"\x00" * 100, "corrupt ZIP archive"),
]


@pytest.mark.parametrize(("name", "data", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_files_name_their_reason_and_store_nothing(bare_stack, keys, name, data, reason):
    before = _originals(bare_stack)
    r = _upload(bare_stack, keys["catalogue"], name, data)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["accepted"] == [] and body["rejected"] and all(x["reason"] for x in body["rejected"])
    assert any(reason in x["reason"] for x in body["rejected"]), body["rejected"]
    assert _originals(bare_stack) == before
    assert healthy(bare_stack)


PARTLY = [
    ("ratio-bomb.zip", hostile.ratio_bomb(1_500_000), "dress/bomb.jpg", "ATELIER_MAX_ARCHIVE_RATIO"),
    ("liar.zip", hostile.lying_member_zip(), "dress/liar.jpg", "corrupt ZIP member"),
    ("methods.zip", hostile.unsupported_methods_zip(), "dress/b.jpg", "BZIP2"),
]


@pytest.mark.parametrize(("name", "data", "member", "reason"), PARTLY, ids=[p[0] for p in PARTLY])
def test_one_bad_member_is_one_rejected_entry(bare_stack, keys, name, data, member, reason):
    before = _originals(bare_stack)
    r = _upload(bare_stack, keys["catalogue"], name, data, category=None)
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["accepted"]) == 1
    rejected = {x["filename"]: x["reason"] for x in body["rejected"]}
    assert reason in rejected[f"{name}:{member}"]
    assert len(_originals(bare_stack) - before) == 1  # the good photo only


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("meta.jpg", hostile.jpeg_with_every_metadata),
        ("meta.png", hostile.png_with_every_metadata),
        ("meta.webp", hostile.webp_with_every_metadata),
        ("polyglot.jpg", hostile.jpeg_trailing_payload),
    ],
)
def test_stored_photos_carry_no_metadata(bare_stack, keys, name, make):
    from atelier.core.storage import ObjectStore

    before = _originals(bare_stack)
    r = _upload(bare_stack, keys["catalogue"], name, make(seed=21))
    assert r.status_code == 201, r.text
    (new,) = _originals(bare_stack) - before
    stored = ObjectStore(bare_stack.settings).get(new)
    for leak in [*hostile.LEAKS, b"PK\x03\x04"]:
        assert leak not in stored, leak


def test_too_many_files_in_one_request_is_413(bare_stack, keys):
    files = [("files", (f"{i}.jpg", b"x")) for i in range(21)]
    r = httpx.post(
        f"{bare_stack.api_url}/v1/catalogue/images",
        headers={"Authorization": f"Bearer {keys['catalogue']}"},
        files=files,
        data={"category": "dress"},
    )
    assert r.status_code == 413 and "ATELIER_MAX_UPLOAD_FILES" in r.json()["detail"]


def test_api_memory_stayed_flat_through_the_corpus(bare_stack, keys):
    """After every attack above (this test runs last in the module), the API's peak RSS is modest."""
    _upload(bare_stack, keys["catalogue"], "again.zip", hostile.overlapping_bomb(400))
    status = open(f"/proc/{bare_stack.children['api'].proc.pid}/status").read()  # noqa: SIM115
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    assert peak_kb < 400 * 1024, f"API peak RSS {peak_kb // 1024} MB"
    assert healthy(bare_stack)
