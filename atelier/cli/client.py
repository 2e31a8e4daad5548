"""A small typed client of the Atelier HTTP API: what the CLI, the demo and scripts are built on.

    client = Client("http://127.0.0.1:8000", key)
    job = client.submit_generation({"per_category": {"dress": 500}, "seed": 7}, idempotency_key="batch-1")
    job = client.wait(job["id"], on_update=print)        # follows the server-sent event stream
    for image in client.images(job["id"], category="dress"):  # every page, lazily
        client.download_file(image["url"], Path(...), sha256=image["sha256"])  # resumes a .part file

Retries: idempotent calls (GET, and POSTs that carry an Idempotency-Key or are naturally idempotent
such as cancel) are retried with exponential backoff and jitter on connection errors, 429 (honouring
Retry-After) and 502/503/504; anything else fails at once with ApiError, whose message is the API's
own `detail` (the CLI prints it without a traceback).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}
RETRY_STATUS = {429, 502, 503, 504}
Job = dict[str, Any]


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response):
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        super().__init__(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}: "
            f"{_describe(detail)}"
        )
        self.status_code = response.status_code
        self.detail = detail


def _describe(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors: name each field at fault
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail)


class Client:
    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 300.0, retries: int = 4, backoff: float = 0.5
    ):
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        self.http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    # ---- transport -------------------------------------------------------------------------
    def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call; retried with backoff only when repeating it cannot do anything twice."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD") or "Idempotency-Key" in (kwargs.get("headers") or {})
        attempts = self.retries + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError):
                if attempt + 1 >= attempts:
                    raise
                time.sleep(self._delay(attempt))
                continue
            if response.status_code in RETRY_STATUS and attempt + 1 < attempts:
                retry_after = response.headers.get("retry-after", "")
                time.sleep(float(retry_after) if retry_after.isdigit() else self._delay(attempt))
                continue
            return response
        raise AssertionError("unreachable")

    def _delay(self, attempt: int) -> float:
        return self.backoff * 2**attempt * (0.5 + random.random())

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise ApiError(response)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._check(
            self.request("GET", path, params={k: v for k, v in params.items() if v is not None})
        )

    def post(self, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        return self._check(self.request("POST", path, idempotent=idempotent, **kwargs))

    def pages(self, path: str, *, limit: int = 200, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated list, fetched one page at a time."""
        cursor = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            yield from page["items"]
            if not (cursor := page.get("next_cursor")):
                return

    # ---- resources -------------------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        return self.get(f"/v1/jobs/{job_id}")

    def jobs(self, *, kind: str | None = None, status: str | None = None) -> Iterator[Job]:
        return self.pages("/v1/jobs", kind=kind, status=status)

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        return self.pages(f"/v1/jobs/{job_id}/events", limit=500)

    def images(self, job_id: str, *, category: str | None = None) -> Iterator[dict[str, Any]]:
        return self.pages(f"/v1/jobs/{job_id}/images", limit=500, category=category)

    def cancel(self, job_id: str) -> Job:
        return self.post(f"/v1/jobs/{job_id}/cancel", idempotent=True)

    def submit_generation(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> Job:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.post("/v1/generation-jobs", json=body, headers=headers)

    def upload(
        self, files: list[tuple[str, bytes]], category: str | None = None, captured_at: str | None = None
    ) -> dict[str, Any]:
        form = {k: v for k, v in (("category", category), ("captured_at", captured_at)) if v}
        response = self.request(
            "POST",
            "/v1/catalogue/images",
            files=[("files", (name, data)) for name, data in files],
            data=form or None,
        )
        if response.status_code == 422 and "accepted" in response.json():
            return response.json()  # nothing accepted: the body still says why, file by file
        return self._check(response)

    # ---- waiting -----------------------------------------------------------------------------
    def stream(self, job_id: str) -> Iterator[Job]:
        """The job object on every change, from the server-sent event stream, until the job ends."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/stream", timeout=httpx.Timeout(60, read=60)) as r:
            if r.status_code >= 400:
                r.read()
                raise ApiError(r)
            data: list[str] = []
            for line in r.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        interval: float = 0.5,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Follow the event stream until the job ends; a dropped stream is reopened (after `interval`),
        and the job is re-read once, so no final state is missed."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                for job in self.stream(job_id):
                    seen = (job["status"], job["progress"]["done"])
                    if on_update and seen != last:  # report changes only: logs stay readable
                        on_update(job)
                    last = seen
                    if job["status"] in TERMINAL:
                        return job
                    if time.monotonic() > deadline:
                        break
            except (httpx.TransportError, json.JSONDecodeError):
                pass
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                if on_update and (job["status"], job["progress"]["done"]) != last:
                    on_update(job)
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(interval)

    # ---- files -------------------------------------------------------------------------------
    def download_file(
        self, url: str, path: Path, *, sha256: str | None = None, http: httpx.Client | None = None
    ) -> int:
        """Download to `path` through `path.part`, resuming a partial file with a Range request;
        verified against `sha256` when given. Returns the bytes fetched now."""
        http = http or self.http
        part = path.with_name(path.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        fetched = 0
        with http.stream("GET", url, headers=headers) as r:
            if r.status_code == 416:  # the part file is already whole
                r.read()
            elif r.status_code not in (200, 206):
                r.read()
                raise ApiError(r)
            else:
                with part.open("ab" if r.status_code == 206 else "wb") as f:
                    for block in r.iter_bytes(1 << 16):
                        f.write(block)
                        fetched += len(block)
        if sha256 is not None and _sha256_of(part) != sha256:
            part.unlink(missing_ok=True)
            raise ValueError(f"{path.name}: sha256 does not match; removed the partial file")
        os.replace(part, path)  # never a half-written file under the final name
        return fetched

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sha256_of(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
