"""The object store on boto3: any S3-compatible server (AWS S3, MinIO, SeaweedFS)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.errors import BulkheadError, InvalidRequest, NotFound
from core.settings import Settings
from storage.objectstore.base import MIN_PART_SIZE, NDJSON, ObjectInfo, job_prefix, ndjson_key
from storage.objectstore.multipart import S3Writer
from storage.objectstore.s3errors import NOT_FOUND_CODES, bare_etag, error_code, translate_error, translated

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_MAX_PRESIGN_SECONDS = 7 * 24 * 3600


class S3ObjectStore:
    """One bucket of an S3-compatible server."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        prefix: str = "bulkhead",
        region: str = "us-east-1",
        presign_client: S3Client | None = None,
        part_size: int = MIN_PART_SIZE,
    ):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.presign_client = presign_client or client
        self.part_size = part_size

    def with_bucket(self, bucket: str) -> S3ObjectStore:
        """Return a store for another bucket of the same server, with the same credentials."""
        return S3ObjectStore(
            self.client,
            bucket,
            prefix=self.prefix,
            region=self.region,
            presign_client=self.presign_client,
            part_size=self.part_size,
        )

    def job_prefix(self, partition: str, job_id: str | int) -> str:
        """Return the key prefix under which one job of ``partition`` keeps its objects."""
        return job_prefix(self.prefix, partition, job_id)

    def ndjson_key(self, partition: str, job_id: str | int, name: str, n: int) -> str:
        """Return the key of NDJSON file ``n`` of ``name`` for a job of ``partition``."""
        return ndjson_key(self.prefix, partition, job_id, name, n)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as err:
            if error_code(err) not in {"404", "NoSuchBucket", "NotFound"}:
                raise translate_error(err, self.bucket) from err
        except BotoCoreError as err:
            raise translate_error(err, self.bucket) from err
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**kwargs)
            log.info("created object store bucket %s", self.bucket)
        except ClientError as err:
            if error_code(err) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise translate_error(err, self.bucket) from err
        except BotoCoreError as err:
            raise translate_error(err, self.bucket) from err

    def delete_bucket(self) -> None:
        """Delete every object and unfinished upload, then the bucket itself."""
        self._delete_under("")
        with translated(self.bucket):
            self.client.delete_bucket(Bucket=self.bucket)

    def open_writer(self, key: str, *, content_type: str = NDJSON) -> S3Writer:
        """Start a streaming upload to ``key``; a retried upload to the same key replaces the object."""
        return S3Writer(self.client, self.bucket, key, content_type=content_type, part_size=self.part_size)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = NDJSON) -> ObjectInfo:
        """Store ``data`` under ``key`` in one request."""
        with translated(self.bucket, key):
            resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return ObjectInfo(key, len(data), bare_etag(resp["ETag"]))

    def get_stream(
        self,
        key: str,
        byte_range: tuple[int, int | None] | None = None,
        *,
        if_match: str | None = None,
        chunk_size: int = 1024 * 1024,
    ) -> Iterator[bytes]:
        """Return the object's bytes as chunks; ``byte_range`` is ``(start, stop)``, stop exclusive or None.

        A missing object raises NotFound at once; a range that starts past the end yields nothing.
        """
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            start, stop = byte_range
            if start < 0 or (stop is not None and stop < start):
                raise InvalidRequest(f"Invalid byte range {byte_range!r}")
            if stop == start:
                self.head_or_raise(key)
                return iter(())
            kwargs["Range"] = f"bytes={start}-" if stop is None else f"bytes={start}-{stop - 1}"
        if if_match is not None:
            kwargs["IfMatch"] = f'"{bare_etag(if_match)}"'
        try:
            resp = self.client.get_object(**kwargs)
        except ClientError as err:
            if error_code(err) in {"InvalidRange", "416"}:
                return iter(())
            raise translate_error(err, self.bucket, key) from err
        except BotoCoreError as err:
            raise translate_error(err, self.bucket, key) from err
        return self._chunks(resp["Body"], key, chunk_size)

    def _chunks(self, body: Any, key: str, chunk_size: int) -> Iterator[bytes]:
        try:
            with translated(self.bucket, key):
                yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's size and entity tag, or None when there is no such object."""
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if error_code(err) in NOT_FOUND_CODES:
                return None
            raise translate_error(err, self.bucket, key) from err
        except BotoCoreError as err:
            raise translate_error(err, self.bucket, key) from err
        return ObjectInfo(key, int(resp["ContentLength"]), bare_etag(resp["ETag"]))

    def head_or_raise(self, key: str) -> ObjectInfo:
        """Return the object's size and entity tag; raise NotFound when there is no such object."""
        info = self.head(key)
        if info is None:
            raise NotFound("No such file")
        return info

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with ``prefix``, in lexicographic order."""
        paginator = self.client.get_paginator("list_objects_v2")
        with translated(self.bucket, prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object (and unfinished upload) under ``prefix``; return how many objects went."""
        if not prefix.strip("/"):
            raise InvalidRequest("Refusing to delete with an empty prefix")
        return self._delete_under(prefix)

    def _delete_under(self, prefix: str) -> int:
        deleted = 0
        batch: list[str] = []
        for key in self.list_keys(prefix):
            batch.append(key)
            if len(batch) == 1000:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        self._abort_uploads(prefix)
        return deleted

    def _delete_batch(self, keys: list[str]) -> int:
        with translated(self.bucket, keys[0]):
            resp = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        errors = resp.get("Errors", [])
        if errors:
            first = errors[0]
            raise BulkheadError(
                f"The object store kept {len(errors)} object(s), e.g. {first.get('Key')}: {first.get('Code')}"
            )
        return len(keys)

    def _abort_uploads(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_multipart_uploads")
        with translated(self.bucket, prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )

    def presign_get(self, key: str, expires_seconds: int, *, content_type: str | None = None) -> str:
        """Return a URL that downloads ``key`` without credentials until it expires (at most 7 days)."""
        if not 1 <= expires_seconds <= _MAX_PRESIGN_SECONDS:
            raise InvalidRequest(f"A pre-signed URL lives 1 s to 7 days, not {expires_seconds} s")
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if content_type:
            params["ResponseContentType"] = content_type
        with translated(self.bucket, key):
            return self.presign_client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_seconds
            )


def s3_client(
    endpoint_url: str | None,
    *,
    access_key: str | None,
    secret_key: str | None,
    region: str,
    max_pool_connections: int = 32,
) -> S3Client:
    """Create a boto3 S3 client: path-style addressing for custom endpoints, SigV4, bounded retries."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=120,
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
        # Checksums only where S3 demands them: several S3-compatible servers reject the newer defaults.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


def object_store_from_settings(settings: Settings) -> S3ObjectStore:
    """Build the object store the settings describe (endpoint, bucket, keys, region, key prefix)."""
    client = s3_client(
        settings.s3_endpoint_url,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        region=settings.s3_region,
    )
    public_url = settings.s3_public_endpoint_url
    presign = (
        s3_client(
            public_url,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            max_pool_connections=1,
        )
        if public_url and public_url != settings.s3_endpoint_url
        else None
    )
    return S3ObjectStore(
        client,
        settings.s3_bucket,
        prefix=settings.s3_prefix,
        region=settings.s3_region,
        presign_client=presign,
    )
