"""A thin HTTP client of the Atelier API, used by the CLI and the demo."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response):
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        super().__init__(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}: {detail}"
        )
        self.status_code = response.status_code
        self.detail = detail


class Client:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 300.0):
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise ApiError(response)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self.http.get(path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._check(self.http.post(path, **kwargs))

    def upload(
        self, files: list[tuple[str, bytes]], category: str | None = None, captured_at: str | None = None
    ) -> dict[str, Any]:
        form = {k: v for k, v in (("category", category), ("captured_at", captured_at)) if v}
        response = self.http.post(
            "/v1/catalogue/images",
            files=[("files", (name, data)) for name, data in files],
            data=form or None,
        )
        if response.status_code == 422 and "accepted" in response.json():
            return response.json()  # nothing accepted: the body still says why, file by file
        return self._check(response)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, *, timeout: float = 600.0, interval: float = 0.5, on_update=None) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            job = self.job(job_id)
            seen = (job["status"], job["progress"]["done"])
            if on_update and seen != last:  # report changes only: logs stay readable
                on_update(job)
            last = seen
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def close(self) -> None:
        self.http.close()
