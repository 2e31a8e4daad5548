"""The blocking client. Each method builds its call in atelier.client._calls and sends it here.

with Client("http://127.0.0.1:8000", key) as client:
    job = client.generation.submit(GenerationRequest(per_category={"dress": 500}, seed=7))
    job = client.jobs.wait(job.id, on_update=print)          # follows the event stream
    report = client.generation.download(job.id, Path("designs"))   # parallel, resumable, sha256
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from atelier.client import _calls as calls
from atelier.client import _shared as shared
from atelier.client import models as m
from atelier.client import requests as rq
from atelier.client._config import resolve
from atelier.client._transport import RetryPolicy, build, client_headers, unreachable
from atelier.client.errors import ApiError, ChecksumMismatch, RateLimited, error_of

T = TypeVar("T")


class Client:
    """A client of one Atelier API with one key. `base_url` and `api_key` default to ATELIER_API_URL
    and ATELIER_API_KEY. Every call has `timeout` seconds (uploads and downloads longer); calls that
    may be repeated get `retries` retries with exponential backoff from `backoff` seconds."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
    ):
        self.base_url, key, version = resolve(base_url, api_key)
        self.retry = RetryPolicy(retries=retries, backoff=backoff)
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=client_headers(key, version),
            timeout=httpx.Timeout(timeout, connect=10),
        )
        # presigned S3 URLs: no API key goes there
        self.files = httpx.Client(timeout=calls.FILE_TIMEOUT, follow_redirects=True)
        self.jobs = Jobs(self)
        self.generation = Generation(self)
        self.training = Training(self)
        self.models = Models(self)
        self.schedules = Schedules(self)
        self.catalogue = Catalogue(self)
        self.trends = Trends(self)
        self.tryon = Tryon(self)
        self.keys = Keys(self)

    # ---- sending ------------------------------------------------------------------------------
    def _exchange(self, call: calls.Call[Any], *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            with ExitStack() as files:
                try:
                    response = self.http.send(build(self.http, call, files), stream=stream)
                except httpx.TransportError as exc:
                    delay = self.retry.after_error(call, attempt, exc)
                    if delay is None:
                        raise unreachable(call, exc) from exc
                else:
                    delay = self.retry.after_response(call, attempt, response)
                    if delay is None:
                        return response
                    response.close()
            time.sleep(delay)
            attempt += 1

    def send(self, call: calls.Call[T]) -> T:
        return call.parse(self._exchange(call))

    def pages(self, make: Callable[[str | None], calls.Call[m.Page[T]]]) -> Iterator[T]:
        """Every item of a cursor-paginated list, one page at a time, lazily."""
        cursor = None
        while True:
            page = self.send(make(cursor))
            yield from page.items
            if not (cursor := page.next_cursor):
                return

    # ---- raw calls by path (JSON in, JSON out) ------------------------------------------------
    def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        return self.send(calls.raw(method, path, idempotent=idempotent, parse=lambda r: r, **kwargs))

    def get(self, path: str, **params: Any) -> Any:
        return self.send(calls.raw("GET", path, idempotent=True, parse=calls.raw_json, params=params))

    def post(self, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        return self.send(calls.raw("POST", path, idempotent=idempotent, parse=calls.raw_json, **kwargs))

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.send(calls.raw("PUT", path, idempotent=True, parse=calls.raw_json, **kwargs))

    # ---- shortcuts for the commonest calls ------------------------------------------------------
    def job(self, job_id: str) -> m.Job:
        return self.jobs.get(job_id)

    def wait(self, job_id: str, **kwargs: Any) -> m.Job:
        return self.jobs.wait(job_id, **kwargs)

    def upload(
        self, files: list, category: str | None = None, captured_at: str | None = None
    ) -> m.UploadResult:
        return self.catalogue.upload(files, category=category, captured_at=captured_at)

    def close(self) -> None:
        self.http.close()
        self.files.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- files on presigned URLs --------------------------------------------------------------
    def fetch(self, target: shared.Target) -> int:
        """Download one file, resuming its part file; returns the bytes fetched now."""
        fetched = 0
        with self.files.stream("GET", target.url, headers=target.resume_headers()) as r:
            if r.status_code != 416:  # 416: the part file is whole already
                if r.status_code not in (200, 206):
                    r.read()
                    raise error_of(r)
                with target.open_part(r.status_code) as f:
                    for block in r.iter_bytes(shared.CHUNK):
                        f.write(block)
                        fetched += len(block)
        target.settle()
        return fetched

    def fetch_with_retries(self, target: shared.Target) -> tuple[str, int, str | None]:
        if target.already_there():
            return "skipped", 0, None
        reason = ""
        for _ in range(shared.DOWNLOAD_ATTEMPTS):
            try:
                return "downloaded", self.fetch(target), None
            except (httpx.TransportError, ChecksumMismatch, ApiError) as exc:
                reason = f"{target.path.name}: {type(exc).__name__}: {exc}"
        return "failed", 0, reason


class _Resource:
    def __init__(self, client: Client):
        self._c = client


class Jobs(_Resource):
    def get(self, job_id: str) -> m.Job:
        return self._c.send(calls.get_job(job_id))

    def list(
        self, *, kind: str | None = None, status: str | None = None, mine: bool = False, page_size: int = 100
    ) -> Iterator[m.Job]:
        """Newest first, every page (lazily: stop iterating to stop fetching)."""
        return self._c.pages(
            lambda c: calls.list_jobs(kind=kind, status=status, mine=mine, limit=page_size, cursor=c)
        )

    def events(self, job_id: str) -> Iterator[m.JobEvent]:
        """The job's timeline, oldest first."""
        return self._c.pages(lambda c: calls.job_events(job_id, limit=500, cursor=c))

    def cancel(self, job_id: str) -> m.Job:
        return self._c.send(calls.cancel_job(job_id))

    def stream(self, job_id: str, *, read_timeout: float | None = None) -> Iterator[m.Job]:
        """The job on every change, from its server-sent event stream, until it ends."""
        response = self._c._exchange(calls.stream_job(job_id, read_timeout), stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            decoder = shared.EventStream()
            for line in response.iter_lines():
                job = decoder.feed(line)
                if job is not None:
                    yield job
        finally:
            response.close()

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 3600.0,
        interval: float = 0.5,
        on_update: shared.OnUpdate | None = None,
    ) -> m.Job:
        """Follow the event stream until the job ends and return it (whatever its outcome); a dropped
        stream is reopened after `interval`, and the job re-read, so no final state is missed. Raises
        WaitTimeout when it has not ended after `timeout` seconds."""
        follow = shared.Follower(job_id, timeout, on_update)
        while True:
            try:
                for job in self.stream(job_id, read_timeout=follow.left):
                    if follow.see(job):
                        return job
                    if follow.expired:
                        break
            except (httpx.TransportError, ValueError, RateLimited):
                pass  # a dropped stream, or this key's streams are all in use: poll once, then again
            job = self.get(job_id)
            if follow.see(job):
                return job
            if follow.expired:
                raise follow.timed_out(job)
            time.sleep(interval)


class Generation(_Resource):
    def submit(
        self,
        request: rq.GenerationRequest | dict | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> m.Job:
        """Submit a generation job: a GenerationRequest, or its fields as keywords. A repeat with the
        same `idempotency_key` returns the first job."""
        body = calls.body_of(request, fields, rq.GenerationRequest)
        return self._c.send(calls.submit_generation(body, idempotency_key))

    def images(
        self, job_id: str, *, category: str | None = None, page_size: int = 500
    ) -> Iterator[m.GeneratedImage]:
        return self._c.pages(lambda c: calls.job_images(job_id, category=category, limit=page_size, cursor=c))

    def manifest_url(self, job_id: str) -> str:
        return self._c.send(calls.manifest_url(job_id))

    def manifest(self, job_id: str) -> list[m.ManifestEntry]:
        r = self._c.files.get(self.manifest_url(job_id))
        return calls.manifest_lines(calls.check(r).content)

    def archive(self, job_id: str, path: Path) -> Path:
        """Download the job's ZIP (submitted with archive=True) to `path`, resuming a partial one."""
        self._c.fetch(shared.Target(self._c.send(calls.archive_url(job_id)), Path(path)))
        return Path(path)

    def download(
        self, job_id: str, directory: Path, *, workers: int = 8, category: str | None = None
    ) -> m.DownloadReport:
        """Every image of the job into `directory` as <index>.<ext>, `workers` at a time, each checked
        against its sha256; files already there are skipped and partial ones resumed, so a rerun
        continues where one stopped."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        report = m.DownloadReport()
        with ThreadPoolExecutor(workers) as pool:
            for page in shared.batched(self.images(job_id, category=category), 500):
                # presigned URLs expire: each page is fetched soon after it is listed
                for outcome in pool.map(
                    self._c.fetch_with_retries, [shared.image_target(directory, i) for i in page]
                ):
                    report = shared.tally(report, outcome)
        return report


class Training(_Resource):
    def submit(
        self,
        request: rq.TrainingRequest | dict | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> m.Job:
        body = calls.body_of(request, fields, rq.TrainingRequest)
        return self._c.send(calls.submit_training(body, idempotency_key))

    def wait(self, job_id: str, **kwargs: Any) -> m.Job:
        return self._c.jobs.wait(job_id, **kwargs)


class Models(_Resource):
    def list(self, *, page_size: int = 100) -> Iterator[m.ModelVersion]:
        return self._c.pages(lambda c: calls.list_models(limit=page_size, cursor=c))

    def get(self, ref: str) -> m.ModelVersion:
        """A version by id, or `production`."""
        return self._c.send(calls.get_model(ref))

    def promote(self, ref: str) -> m.ModelVersion:
        return self._c.send(calls.promote_model(ref))


class Schedules(_Resource):
    def list(self) -> list[m.Schedule]:
        return list(self._c.pages(lambda c: calls.list_schedules()))

    def put(
        self, name: str, *, cron: str, enabled: bool = True, params: rq.RetrainParams | dict | None = None
    ) -> m.Schedule:
        body = rq.ScheduleRequest(cron=cron, enabled=enabled, params=calls.retrain_params(params))
        return self._c.send(calls.put_schedule(name, body))

    def run(self, name: str, *, idempotency_key: str | None = None) -> m.ScheduleRun:
        return self._c.send(calls.run_schedule(name, idempotency_key))


class Catalogue(_Resource):
    def upload(
        self,
        files: list,
        *,
        category: str | None = None,
        captured_at: str | datetime | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.UploadResult:
        """Photos (paths, or (name, bytes) pairs) of one `category`, or ZIPs of category folders."""
        call = calls.upload(
            shared.as_files(files),
            category=category,
            captured_at=calls.iso(captured_at),
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
        )
        return self._c.send(call)

    def upload_zip(self, path: Path, **kwargs: Any) -> m.UploadResult:
        return self.upload([Path(path)], **kwargs)

    def upload_folder(
        self, directory: Path, *, batch: int = 100, captured_at: str | datetime | None = None
    ) -> m.FolderUpload:
        """DIRECTORY/<category>/<photo>, `batch` photos per request."""
        total = m.FolderUpload()
        for category, paths in shared.folder_batches(Path(directory), batch):
            result = self.upload(paths, category=category, captured_at=captured_at)
            total = shared.add_upload(total, result)
        return total

    def import_dataset(
        self,
        archive: Path,
        *,
        format: str = "deepfashion",  # noqa: A002
        mapping: dict[str, str | None] | None = None,
        partitions: list[str] | None = None,
        crop: bool = True,
        captured_at: str | datetime | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Job:
        """An ingest job that imports a data set ZIP in a known layout."""
        form = calls.import_form(format, mapping, partitions, crop, calls.iso(captured_at), webhook_url)
        call = calls.import_dataset(
            Path(archive), filename=Path(archive).name, form=form, idempotency_key=idempotency_key
        )
        return self._c.send(call)

    def list(
        self, *, category: str | None = None, since: str | datetime | None = None, page_size: int = 200
    ) -> Iterator[m.CatalogueImage]:
        return self._c.pages(
            lambda c: calls.list_catalogue(category=category, since=since, limit=page_size, cursor=c)
        )

    def stats(self, *, period: str = "month") -> m.CatalogueStats:
        return self._c.send(calls.catalogue_stats(period))


class Trends(_Resource):
    def submit(
        self,
        request: rq.TrendRequest | dict | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> m.Job:
        body = calls.body_of(request, fields, rq.TrendRequest)
        return self._c.send(calls.submit_trend_report(body, idempotency_key))

    def get(self, job_id: str) -> m.TrendReport:
        return self._c.send(calls.get_trend_report(job_id))

    def wait(self, job_id: str, **kwargs: Any) -> m.TrendReport:
        self._c.jobs.wait(job_id, **kwargs)
        return self.get(job_id)


class Tryon(_Resource):
    def preview(self, job_id: str, index: int, *, template: str | None = None) -> bytes:
        """A PNG of generated image `index` on a body template."""
        return self._c.send(calls.tryon_preview(job_id, index, template))


class Keys(_Resource):
    def create(self, name: str, scopes: list[str], *, expires_at: datetime | None = None) -> m.CreatedKey:
        """The key and its webhook signing secret are in the answer, and nowhere else afterwards."""
        return self._c.send(calls.create_key(rq.KeyRequest(name=name, scopes=scopes, expires_at=expires_at)))

    def list(self, *, page_size: int = 100) -> Iterator[m.ApiKey]:
        return self._c.pages(lambda c: calls.list_keys(limit=page_size, cursor=c))

    def revoke(self, key_id: str) -> m.ApiKey:
        return self._c.send(calls.revoke_key(key_id))

    def rotate_webhook_secret(self, key_id: str) -> m.WebhookSecret:
        return self._c.send(calls.rotate_webhook_secret(key_id))
