"""The asyncio client: the resources and calls of atelier.client.sync, awaited. Requests are built and
answers parsed by the same atelier.client._calls; only the sending, the waits and the loops differ.

    async with AsyncClient(url, key) as client:
        job = await client.generation.submit(count=100, seed=7)
        job = await client.jobs.wait(job.id)
        async for image in client.generation.images(job.id):
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
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


class AsyncClient:
    """As atelier.client.Client, with `await` (and `async for` over lists and streams)."""

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
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=client_headers(key, version),
            timeout=httpx.Timeout(timeout, connect=10),
        )
        self.files = httpx.AsyncClient(timeout=calls.FILE_TIMEOUT, follow_redirects=True)
        self.jobs = AsyncJobs(self)
        self.generation = AsyncGeneration(self)
        self.training = AsyncTraining(self)
        self.models = AsyncModels(self)
        self.schedules = AsyncSchedules(self)
        self.catalogue = AsyncCatalogue(self)
        self.trends = AsyncTrends(self)
        self.tryon = AsyncTryon(self)
        self.keys = AsyncKeys(self)

    async def _exchange(self, call: calls.Call[Any], *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            with ExitStack() as files:
                try:
                    response = await self.http.send(build(self.http, call, files), stream=stream)
                except httpx.TransportError as exc:
                    delay = self.retry.after_error(call, attempt, exc)
                    if delay is None:
                        raise unreachable(call, exc) from exc
                else:
                    delay = self.retry.after_response(call, attempt, response)
                    if delay is None:
                        return response
                    await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def send(self, call: calls.Call[T]) -> T:
        response = await self._exchange(call)
        return call.parse(response)

    async def pages(self, make: Callable[[str | None], calls.Call[m.Page[T]]]) -> AsyncIterator[T]:
        cursor = None
        while True:
            page = await self.send(make(cursor))
            for item in page.items:
                yield item
            if not (cursor := page.next_cursor):
                return

    async def get(self, path: str, **params: Any) -> Any:
        return await self.send(calls.raw("GET", path, idempotent=True, parse=calls.raw_json, params=params))

    async def post(self, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        return await self.send(calls.raw("POST", path, idempotent=idempotent, parse=calls.raw_json, **kwargs))

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.files.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def fetch(self, target: shared.Target) -> int:
        fetched = 0
        async with self.files.stream("GET", target.url, headers=target.resume_headers()) as r:
            if r.status_code != 416:
                if r.status_code not in (200, 206):
                    await r.aread()
                    raise error_of(r)
                with target.open_part(r.status_code) as f:
                    async for block in r.aiter_bytes(shared.CHUNK):
                        f.write(block)
                        fetched += len(block)
        await asyncio.to_thread(target.settle)  # hashing a large file would stall the loop
        return fetched

    async def fetch_with_retries(self, target: shared.Target) -> tuple[str, int, str | None]:
        if await asyncio.to_thread(target.already_there):
            return "skipped", 0, None
        reason = ""
        for _ in range(shared.DOWNLOAD_ATTEMPTS):
            try:
                return "downloaded", await self.fetch(target), None
            except (httpx.TransportError, ChecksumMismatch, ApiError) as exc:
                reason = f"{target.path.name}: {type(exc).__name__}: {exc}"
        return "failed", 0, reason


class _Resource:
    def __init__(self, client: AsyncClient):
        self._c = client


class AsyncJobs(_Resource):
    async def get(self, job_id: str) -> m.Job:
        return await self._c.send(calls.get_job(job_id))

    def list(
        self, *, kind: str | None = None, status: str | None = None, mine: bool = False, page_size: int = 100
    ) -> AsyncIterator[m.Job]:
        return self._c.pages(
            lambda c: calls.list_jobs(kind=kind, status=status, mine=mine, limit=page_size, cursor=c)
        )

    def events(self, job_id: str) -> AsyncIterator[m.JobEvent]:
        return self._c.pages(lambda c: calls.job_events(job_id, limit=500, cursor=c))

    async def cancel(self, job_id: str) -> m.Job:
        return await self._c.send(calls.cancel_job(job_id))

    async def stream(self, job_id: str, *, read_timeout: float | None = None) -> AsyncIterator[m.Job]:
        response = await self._c._exchange(calls.stream_job(job_id, read_timeout), stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_of(response)
            decoder = shared.EventStream()
            async for line in response.aiter_lines():
                job = decoder.feed(line)
                if job is not None:
                    yield job
        finally:
            await response.aclose()

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 3600.0,
        interval: float = 0.5,
        on_update: shared.OnUpdate | None = None,
    ) -> m.Job:
        follow = shared.Follower(job_id, timeout, on_update)
        while True:
            try:
                async for job in self.stream(job_id, read_timeout=follow.left):
                    if follow.see(job):
                        return job
                    if follow.expired:
                        break
            except (httpx.TransportError, ValueError, RateLimited):
                pass  # a dropped stream, or this key's streams are all in use: poll once, then again
            job = await self.get(job_id)
            if follow.see(job):
                return job
            if follow.expired:
                raise follow.timed_out(job)
            await asyncio.sleep(interval)


class AsyncGeneration(_Resource):
    async def submit(
        self,
        request: rq.GenerationRequest | dict | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> m.Job:
        body = calls.body_of(request, fields, rq.GenerationRequest)
        return await self._c.send(calls.submit_generation(body, idempotency_key))

    def images(
        self, job_id: str, *, category: str | None = None, page_size: int = 500
    ) -> AsyncIterator[m.GeneratedImage]:
        return self._c.pages(lambda c: calls.job_images(job_id, category=category, limit=page_size, cursor=c))

    async def manifest_url(self, job_id: str) -> str:
        return await self._c.send(calls.manifest_url(job_id))

    async def manifest(self, job_id: str) -> list[m.ManifestEntry]:
        r = await self._c.files.get(await self.manifest_url(job_id))
        return calls.manifest_lines(calls.check(r).content)

    async def archive(self, job_id: str, path: Path) -> Path:
        await self._c.fetch(shared.Target(await self._c.send(calls.archive_url(job_id)), Path(path)))
        return Path(path)

    async def download(
        self, job_id: str, directory: Path, *, workers: int = 8, category: str | None = None
    ) -> m.DownloadReport:
        Path(directory).mkdir(parents=True, exist_ok=True)
        report = m.DownloadReport()
        gate = asyncio.Semaphore(workers)

        async def one(image: m.GeneratedImage) -> tuple[str, int, str | None]:
            async with gate:
                return await self._c.fetch_with_retries(shared.image_target(directory, image))

        page: list[m.GeneratedImage] = []
        async for image in self.images(job_id, category=category):
            page.append(image)
            if len(page) == 500:
                for outcome in await asyncio.gather(*map(one, page)):
                    report = shared.tally(report, outcome)
                page = []
        for outcome in await asyncio.gather(*map(one, page)):
            report = shared.tally(report, outcome)
        return report


class AsyncTraining(_Resource):
    async def submit(
        self,
        request: rq.TrainingRequest | dict | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> m.Job:
        body = calls.body_of(request, fields, rq.TrainingRequest)
        return await self._c.send(calls.submit_training(body, idempotency_key))

    async def wait(self, job_id: str, **kwargs: Any) -> m.Job:
        return await self._c.jobs.wait(job_id, **kwargs)


class AsyncModels(_Resource):
    def list(self, *, page_size: int = 100) -> AsyncIterator[m.ModelVersion]:
        return self._c.pages(lambda c: calls.list_models(limit=page_size, cursor=c))

    async def get(self, ref: str) -> m.ModelVersion:
        return await self._c.send(calls.get_model(ref))

    async def promote(self, ref: str) -> m.ModelVersion:
        return await self._c.send(calls.promote_model(ref))


class AsyncSchedules(_Resource):
    async def list(self) -> list[m.Schedule]:
        return [s async for s in self._c.pages(lambda c: calls.list_schedules())]

    async def put(
        self, name: str, *, cron: str, enabled: bool = True, params: rq.RetrainParams | dict | None = None
    ) -> m.Schedule:
        body = rq.ScheduleRequest(cron=cron, enabled=enabled, params=calls.retrain_params(params))
        return await self._c.send(calls.put_schedule(name, body))

    async def run(self, name: str, *, idempotency_key: str | None = None) -> m.ScheduleRun:
        return await self._c.send(calls.run_schedule(name, idempotency_key))


class AsyncCatalogue(_Resource):
    async def upload(
        self,
        files: list,
        *,
        category: str | None = None,
        captured_at: str | datetime | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.UploadResult:
        call = calls.upload(
            shared.as_files(files),
            category=category,
            captured_at=calls.iso(captured_at),
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
        )
        return await self._c.send(call)

    async def upload_zip(self, path: Path, **kwargs: Any) -> m.UploadResult:
        return await self.upload([Path(path)], **kwargs)

    async def upload_folder(
        self, directory: Path, *, batch: int = 100, captured_at: str | datetime | None = None
    ) -> m.FolderUpload:
        total = m.FolderUpload()
        for category, paths in shared.folder_batches(Path(directory), batch):
            result = await self.upload(paths, category=category, captured_at=captured_at)
            total = shared.add_upload(total, result)
        return total

    async def import_dataset(
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
        form = calls.import_form(format, mapping, partitions, crop, calls.iso(captured_at), webhook_url)
        call = calls.import_dataset(
            Path(archive), filename=Path(archive).name, form=form, idempotency_key=idempotency_key
        )
        return await self._c.send(call)

    def list(
        self, *, category: str | None = None, since: str | datetime | None = None, page_size: int = 200
    ) -> AsyncIterator[m.CatalogueImage]:
        return self._c.pages(
            lambda c: calls.list_catalogue(category=category, since=since, limit=page_size, cursor=c)
        )

    async def stats(self, *, period: str = "month") -> m.CatalogueStats:
        return await self._c.send(calls.catalogue_stats(period))


class AsyncTrends(_Resource):
    async def submit(
        self,
        request: rq.TrendRequest | dict | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> m.Job:
        body = calls.body_of(request, fields, rq.TrendRequest)
        return await self._c.send(calls.submit_trend_report(body, idempotency_key))

    async def get(self, job_id: str) -> m.TrendReport:
        return await self._c.send(calls.get_trend_report(job_id))

    async def wait(self, job_id: str, **kwargs: Any) -> m.TrendReport:
        await self._c.jobs.wait(job_id, **kwargs)
        return await self.get(job_id)


class AsyncTryon(_Resource):
    async def preview(self, job_id: str, index: int, *, template: str | None = None) -> bytes:
        return await self._c.send(calls.tryon_preview(job_id, index, template))


class AsyncKeys(_Resource):
    async def create(
        self, name: str, scopes: list[str], *, expires_at: datetime | None = None
    ) -> m.CreatedKey:
        return await self._c.send(
            calls.create_key(rq.KeyRequest(name=name, scopes=scopes, expires_at=expires_at))
        )

    def list(self, *, page_size: int = 100) -> AsyncIterator[m.ApiKey]:
        return self._c.pages(lambda c: calls.list_keys(limit=page_size, cursor=c))

    async def revoke(self, key_id: str) -> m.ApiKey:
        return await self._c.send(calls.revoke_key(key_id))

    async def rotate_webhook_secret(self, key_id: str) -> m.WebhookSecret:
        return await self._c.send(calls.rotate_webhook_secret(key_id))
