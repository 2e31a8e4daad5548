"""The S3 object store over boto3: put, get, presign, list, delete, with one client per process.

Works against AWS S3, MinIO and the embedded SeaweedFS alike (path-style addressing, SigV4).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from atelier.core.config import Settings, get_settings

_lock = threading.Lock()
_stores: dict[tuple, ObjectStore] = {}


class ObjectStore:
    def __init__(self, settings: Settings):
        self.bucket = settings.s3_bucket
        self.presign_expires = settings.presign_expires_seconds
        self.client = self._client(settings, settings.s3_endpoint_url)
        # Presigning is local (no request is made), so a second client signs for the address that
        # browsers and laptops resolve; the signature covers the host, so it cannot be rewritten later.
        public = settings.s3_public_endpoint_url
        self.presign_client = self._client(settings, public) if public else self.client

    @staticmethod
    def _client(settings: Settings, endpoint_url: str | None):  # noqa: ANN205 - a boto3 S3 client
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
            config=BotoConfig(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                max_pool_connections=32,
                # bounded waits and boto's own retries for a blip; longer outages are retried by the
                # caller with backoff (atelier.core.faults), which does not use up a unit's deliveries
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, Metadata=metadata or {}
        )

    def upload_file(self, key: str, path: str, *, content_type: str = "application/octet-stream") -> None:
        """Multipart upload from disk: large archives never sit in memory whole."""
        self.client.upload_file(path, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def put_file(self, key: str, fileobj: BinaryIO, *, content_type: str = "application/zip") -> None:
        """Multipart upload from an open file (a spooled upload), read in parts."""
        self.client.upload_fileobj(fileobj, self.bucket, key, ExtraArgs={"ContentType": content_type})

    def download_file(self, key: str, path: str) -> None:
        """To disk in parts: a large archive never sits in memory whole."""
        self.client.download_file(self.bucket, key, path)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def presign(self, key: str, *, expires: int | None = None, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self.presign_client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires or self.presign_expires
        )

    def list(self, prefix: str = "") -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        keys = [obj["Key"] for obj in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def get_store(settings: Settings | None = None) -> ObjectStore:
    """The process's store for these settings (boto3 clients are thread-safe, sessions are not)."""
    settings = settings or get_settings()
    ident = (
        os.getpid(),
        settings.s3_endpoint_url,
        settings.s3_public_endpoint_url,
        settings.s3_bucket,
        settings.s3_access_key,
    )
    with _lock:
        if ident not in _stores:
            _stores[ident] = ObjectStore(settings)
        return _stores[ident]
