"""Every API call as data: method, path, body, whether it may be repeated, its time-out, and how its
answer is read. The sync and async clients send these same objects (`Client.send`, `AsyncClient.send`),
so a request is built and its answer parsed in one place only.

A submit carries an Idempotency-Key (the caller's, or a fresh one per call): the API answers a repeat
with the same job, which makes the submit safe to retry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from atelier.client import models as m
from atelier.client import requests as rq
from atelier.client.errors import ApiError, error_of

T = TypeVar("T")
Parse = Callable[[httpx.Response], T]

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
# the job stream sends a keep-alive every 15 s: a minute of silence is a dead connection
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)
FILE_TIMEOUT = httpx.Timeout(120.0, connect=10.0)

FileSource = bytes | Path


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Parse[T]
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    # multipart files: (form field, file name, bytes or a path opened when the request is built)
    files: list[tuple[str, str, FileSource]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False
    timeout: httpx.Timeout | None = None

    def request_kwargs(self) -> dict[str, Any]:
        """httpx.build_request's arguments, less the files (opened per attempt by the transports)."""
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.params:
            kwargs["params"] = {k: _param(v) for k, v in self.params.items() if v is not None}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.data:
            kwargs["data"] = self.data
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs


def _param(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def seg(value: object) -> str:
    return quote(str(value), safe="")


# ---------------------------------------------------------------- reading answers


def check(response: httpx.Response, *ok: int) -> httpx.Response:
    if response.status_code >= 400 or (ok and response.status_code not in ok):
        raise error_of(response)
    return response


def model(cls: type[T]) -> Parse[T]:
    adapter = TypeAdapter(cls)
    return lambda r: adapter.validate_json(check(r).content)


def raw_json(response: httpx.Response) -> Any:
    check(response)
    return response.json() if response.content else None


def content(response: httpx.Response) -> bytes:
    return check(response).content


def location(response: httpx.Response) -> str:
    """A 307 to a presigned URL (the manifest, the archive)."""
    check(response, 307)
    return response.headers["location"]


def upload_result(response: httpx.Response) -> m.UploadResult:
    # A 422 where nothing was accepted still says, file by file, why: that is the result, not an error.
    if response.status_code == 422:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "accepted" in body:
            return m.UploadResult.model_validate(body)
    return model(m.UploadResult)(response)


def manifest_lines(data: bytes) -> list[m.ManifestEntry]:
    return [m.ManifestEntry.model_validate(json.loads(line)) for line in data.splitlines() if line.strip()]


def submit_headers(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key or f"atelier-client-{uuid.uuid4().hex}"}


def body_of(request: BaseModel | dict[str, Any] | None, fields: dict[str, Any], cls: type[rq.Body]) -> Any:
    """A request model, a dict, or keyword fields (validated as `cls`): the JSON to send."""
    if request is None:
        return cls(**{k: v for k, v in fields.items() if v is not None}).body()
    if fields:
        raise TypeError("pass a request object or keyword fields, not both")
    return request.body() if isinstance(request, rq.Body) else dict(request)  # type: ignore[arg-type]


def iso(value: str | datetime | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def retrain_params(params: rq.RetrainParams | dict | None) -> dict[str, Any]:
    if params is None:
        return {}
    return params.body() if isinstance(params, rq.RetrainParams) else dict(params)


def import_form(
    fmt: str,
    mapping: dict[str, str | None] | None,
    partitions: list[str] | None,
    crop: bool,
    captured_at: str | None,
    webhook_url: str | None,
) -> dict[str, str]:
    """The form fields of POST /v1/catalogue/imports."""
    form = {"format": fmt, "crop": "true" if crop else "false"}
    if mapping is not None:
        form["mapping"] = json.dumps(mapping)
    if partitions:
        form["partitions"] = ",".join(partitions)
    if captured_at:
        form["captured_at"] = captured_at
    if webhook_url:
        form["webhook_url"] = webhook_url
    return form


# ---------------------------------------------------------------- jobs


def get_job(job_id: str) -> Call[m.Job]:
    return Call("GET", f"/v1/jobs/{seg(job_id)}", model(m.Job), idempotent=True)


def list_jobs(
    *, kind: str | None, status: str | None, mine: bool, limit: int, cursor: str | None
) -> Call[m.Page[m.Job]]:
    params = {"kind": kind, "status": status, "mine": mine or None, "limit": limit, "cursor": cursor}
    return Call("GET", "/v1/jobs", model(m.Page[m.Job]), params=params, idempotent=True)


def job_events(job_id: str, *, limit: int, cursor: str | None) -> Call[m.Page[m.JobEvent]]:
    params = {"limit": limit, "cursor": cursor}
    return Call(
        "GET", f"/v1/jobs/{seg(job_id)}/events", model(m.Page[m.JobEvent]), params=params, idempotent=True
    )


def cancel_job(job_id: str) -> Call[m.Job]:
    # asking twice is asking once: safe to repeat
    return Call("POST", f"/v1/jobs/{seg(job_id)}/cancel", model(m.Job), idempotent=True)


def stream_job(job_id: str, read_timeout: float | None = None) -> Call[httpx.Response]:
    """The job's event stream; `read_timeout` (a wait's time left) bounds a silent connection."""
    headers = {"Accept": "text/event-stream"}
    timeout = (
        STREAM_TIMEOUT
        if read_timeout is None
        else httpx.Timeout(10.0, read=max(0.1, min(60.0, read_timeout)))
    )
    return Call(
        "GET", f"/v1/jobs/{seg(job_id)}/stream", check, headers=headers, timeout=timeout, idempotent=True
    )


# ---------------------------------------------------------------- generation


def submit_generation(body: Any, idempotency_key: str | None) -> Call[m.Job]:
    headers = submit_headers(idempotency_key)
    return Call("POST", "/v1/generation-jobs", model(m.Job), json=body, headers=headers, idempotent=True)


def job_images(
    job_id: str, *, category: str | None, limit: int, cursor: str | None
) -> Call[m.Page[m.GeneratedImage]]:
    params = {"category": category, "limit": limit, "cursor": cursor}
    return Call(
        "GET",
        f"/v1/jobs/{seg(job_id)}/images",
        model(m.Page[m.GeneratedImage]),
        params=params,
        idempotent=True,
    )


def manifest_url(job_id: str) -> Call[str]:
    return Call("GET", f"/v1/jobs/{seg(job_id)}/manifest", location, idempotent=True)


def archive_url(job_id: str) -> Call[str]:
    return Call("GET", f"/v1/jobs/{seg(job_id)}/archive", location, idempotent=True)


def tryon_preview(job_id: str, index: int, template: str | None) -> Call[bytes]:
    path = f"/v1/jobs/{seg(job_id)}/images/{int(index)}/tryon"
    return Call("GET", path, content, params={"template": template}, idempotent=True)


# ---------------------------------------------------------------- training, models, schedules


def submit_training(body: Any, idempotency_key: str | None) -> Call[m.Job]:
    headers = submit_headers(idempotency_key)
    return Call("POST", "/v1/training-jobs", model(m.Job), json=body, headers=headers, idempotent=True)


def list_models(*, limit: int, cursor: str | None) -> Call[m.Page[m.ModelVersion]]:
    params = {"limit": limit, "cursor": cursor}
    return Call("GET", "/v1/models", model(m.Page[m.ModelVersion]), params=params, idempotent=True)


def get_model(ref: str) -> Call[m.ModelVersion]:
    return Call("GET", f"/v1/models/{seg(ref)}", model(m.ModelVersion), idempotent=True)


def promote_model(ref: str) -> Call[m.ModelVersion]:
    return Call("POST", f"/v1/models/{seg(ref)}/promote", model(m.ModelVersion), idempotent=True)


def list_schedules() -> Call[m.Page[m.Schedule]]:
    return Call("GET", "/v1/schedules", model(m.Page[m.Schedule]), idempotent=True)


def put_schedule(name: str, body: rq.ScheduleRequest) -> Call[m.Schedule]:
    return Call("PUT", f"/v1/schedules/{seg(name)}", model(m.Schedule), json=body.body(), idempotent=True)


def run_schedule(name: str, idempotency_key: str | None) -> Call[m.ScheduleRun]:
    """Fire a schedule now; only with an Idempotency-Key is it repeated (a repeat finds the same run)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    path = f"/v1/schedules/{seg(name)}/run"
    return Call("POST", path, model(m.ScheduleRun), headers=headers, idempotent=bool(idempotency_key))


# ---------------------------------------------------------------- catalogue


def upload(
    files: list[tuple[str, FileSource]],
    *,
    category: str | None,
    captured_at: str | None,
    webhook_url: str | None,
    idempotency_key: str | None,
) -> Call[m.UploadResult]:
    form = {"category": category, "captured_at": captured_at, "webhook_url": webhook_url}
    return Call(
        "POST",
        "/v1/catalogue/images",
        upload_result,
        data={k: v for k, v in form.items() if v} or None,
        files=[("files", name, source) for name, source in files],
        headers=submit_headers(idempotency_key),
        idempotent=True,  # photos are deduplicated by content, and the ingest job by the key
        timeout=UPLOAD_TIMEOUT,
    )


def import_dataset(
    archive: FileSource,
    *,
    filename: str,
    form: dict[str, str],
    idempotency_key: str | None,
) -> Call[m.Job]:
    return Call(
        "POST",
        "/v1/catalogue/imports",
        model(m.Job),
        data=form,
        files=[("file", filename, archive)],
        headers=submit_headers(idempotency_key),
        idempotent=True,
        timeout=UPLOAD_TIMEOUT,
    )


def list_catalogue(
    *, category: str | None, since: Any, limit: int, cursor: str | None
) -> Call[m.Page[m.CatalogueImage]]:
    params = {"category": category, "since": since, "limit": limit, "cursor": cursor}
    return Call(
        "GET", "/v1/catalogue/images", model(m.Page[m.CatalogueImage]), params=params, idempotent=True
    )


def catalogue_stats(period: str) -> Call[m.CatalogueStats]:
    return Call(
        "GET", "/v1/catalogue/stats", model(m.CatalogueStats), params={"period": period}, idempotent=True
    )


# ---------------------------------------------------------------- trend reports


def submit_trend_report(body: Any, idempotency_key: str | None) -> Call[m.Job]:
    headers = submit_headers(idempotency_key)
    return Call("POST", "/v1/trend-reports", model(m.Job), json=body, headers=headers, idempotent=True)


def get_trend_report(job_id: str) -> Call[m.TrendReport]:
    return Call("GET", f"/v1/trend-reports/{seg(job_id)}", model(m.TrendReport), idempotent=True)


# ---------------------------------------------------------------- keys


def create_key(body: rq.KeyRequest) -> Call[m.CreatedKey]:
    # not repeated: a second attempt would make a second key
    return Call("POST", "/v1/keys", model(m.CreatedKey), json=body.body())


def list_keys(*, limit: int, cursor: str | None) -> Call[m.Page[m.ApiKey]]:
    params = {"limit": limit, "cursor": cursor}
    return Call("GET", "/v1/keys", model(m.Page[m.ApiKey]), params=params, idempotent=True)


def revoke_key(key_id: str) -> Call[m.ApiKey]:
    return Call("POST", f"/v1/keys/{seg(key_id)}/revoke", model(m.ApiKey), idempotent=True)


def rotate_webhook_secret(key_id: str) -> Call[m.WebhookSecret]:
    return Call("POST", f"/v1/keys/{seg(key_id)}/webhook-secret", model(m.WebhookSecret))


# ---------------------------------------------------------------- raw calls


def raw(method: str, path: str, *, idempotent: bool | None, parse: Parse[Any], **kwargs: Any) -> Call[Any]:
    """A call by path, for what the typed methods do not cover; GETs and calls that carry an
    Idempotency-Key are repeated on failure, others are not."""
    headers = dict(kwargs.pop("headers", None) or {})
    if idempotent is None:
        idempotent = method in ("GET", "HEAD", "PUT") or "Idempotency-Key" in headers
    call = Call(
        method,
        path,
        parse,
        params=kwargs.pop("params", None),
        json=kwargs.pop("json", None),
        data=kwargs.pop("data", None),
        headers=headers,
        idempotent=idempotent,
        timeout=kwargs.pop("timeout", None),
    )
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}: use the typed methods for uploads")
    return call


__all__ = ["ApiError", "Call"]
