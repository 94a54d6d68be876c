"""Object store on an S3 bucket (AWS or any S3-compatible server) through boto3.

Keys are relative and live under `<prefix>/` in the bucket, so several deployments can share
a bucket. Every object is written with a single PutObject, which S3 makes visible all at
once: a reader polling the model pointer sees either the old or the new one, never a mix.
Credentials come from boto3's usual chain (environment, shared files, instance role).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cbloop.settings import S3Settings
from cbloop.storage.base import ObjectInfo, ObjectNotFound, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class S3Timeouts:
    """Network limits for every S3 call.

    They are short on purpose: a worker polling the pointer, or the segment shipper, should
    learn within seconds that S3 is unreachable and fall back (keep the loaded model, keep
    segments on disk) instead of hanging. The shipper does its own, longer backoff.
    """

    connect_seconds: float = 3.0
    read_seconds: float = 20.0
    max_attempts: int = 2


class S3Store:
    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        #: Keys per ListObjectsV2 call (S3's maximum is 1000).
        self.list_page_size = 1000

    @classmethod
    def from_settings(cls, settings: S3Settings, timeouts: S3Timeouts | None = None) -> S3Store:
        if not settings.bucket:
            raise StorageError("storage.s3.bucket is not set")
        limits = timeouts or S3Timeouts()
        config = Config(
            connect_timeout=limits.connect_seconds,
            read_timeout=limits.read_seconds,
            retries={"max_attempts": limits.max_attempts, "mode": "standard"},
        )
        if settings.endpoint_url:
            config = config.merge(
                Config(
                    # S3-compatible servers behind a plain host name cannot serve
                    # virtual-hosted bucket names like "cbloop.s3:9000": address by path.
                    s3={"addressing_style": "path"},
                    # Some S3-compatible servers reject the CRC trailers newer botocore adds
                    # to every upload; the shipper checks the stored size instead.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
            )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            config=config,
        )
        return cls(client, settings.bucket, settings.prefix)

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    # -- keys ------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _fail(self, action: str, key: str, exc: ClientError | BotoCoreError) -> StorageError:
        if isinstance(exc, ClientError) and _error_code(exc) in _NOT_FOUND_CODES:
            return ObjectNotFound(key)
        return StorageError(f"S3 {action} of {key!r} in bucket {self.bucket!r} failed: {exc}")

    # -- ObjectStore -----------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("put", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            return response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("get", key, exc) from exc

    def put_file(self, key: str, path: Path) -> None:
        # One PutObject (not a multipart upload) keeps the write atomic and the ETag a plain
        # MD5; segments and models stay far below S3's 5 GB single-request limit.
        try:
            with path.open("rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=body)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("upload", key, exc) from exc
        except OSError as exc:
            raise StorageError(f"S3 upload of {key!r}: cannot read {path}: {exc}") from exc

    def get_file(self, key: str, dest: Path) -> None:
        """Download next to `dest` and rename, so `dest` is never a partial file."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        except OSError as exc:
            raise StorageError(f"S3 download of {key!r}: cannot write {dest}: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
                body = response["Body"]
                for chunk in body.iter_chunks(_CHUNK):
                    out.write(chunk)
            os.replace(tmp, dest)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("download", key, exc) from exc
        except OSError as exc:
            raise StorageError(f"S3 download of {key!r}: cannot write {dest}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def list(self, prefix: str) -> list[ObjectInfo]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        found: list[ObjectInfo] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=full_prefix,
                PaginationConfig={"PageSize": self.list_page_size},
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    found.append(
                        ObjectInfo(
                            self._relative(obj["Key"]),
                            obj["Size"],
                            _etag(obj.get("ETag", "")),
                        )
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(found, key=lambda o: o.key)

    def stat(self, key: str) -> ObjectInfo | None:
        """One HeadObject: how workers poll the model pointer without downloading it."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as exc:
            error = self._fail("stat", key, exc)
            if isinstance(error, ObjectNotFound):
                return None
            raise error from exc
        return ObjectInfo(key, head["ContentLength"], _etag(head["ETag"]))

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", key, exc) from exc

    def local_path(self, key: str) -> Path | None:
        del key
        return None

    # -- administration ---------------------------------------------------------------
    def ensure_bucket(self) -> None:
        """Create the bucket when missing (for tests and single-tenant S3-compatible servers)."""
        if self._bucket_exists():
            return
        region = self.client.meta.region_name
        try:
            if region and region != "us-east-1":
                # Outside us-east-1 S3 wants the region repeated in the request body.
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._fail("create bucket", self.bucket, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("create bucket", self.bucket, exc) from exc
        logger.info("bucket created", extra={"bucket": self.bucket})

    def _bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES | {"NoSuchBucket"}:
                return False
            raise self._fail("head bucket", self.bucket, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("head bucket", self.bucket, exc) from exc
        return True


def _error_code(exc: ClientError) -> str:
    error: Any = exc.response.get("Error", {})
    return str(error.get("Code", ""))


def _etag(raw: str) -> str:
    return raw.strip('"')
