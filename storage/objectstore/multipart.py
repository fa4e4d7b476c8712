"""Streaming multipart upload of one object to S3, holding at most two parts in memory."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import BulkheadError
from storage.objectstore.base import ObjectInfo
from storage.objectstore.s3errors import bare_etag, translated

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_MAX_PARTS = 10_000


class S3Writer:
    """A streaming upload: small objects go up in one PUT, larger ones in multipart parts of ``part_size``.

    One part uploads in a background thread while the next fills, so at most two parts are held at once.
    """

    def __init__(self, client: S3Client, bucket: str, key: str, *, content_type: str, part_size: int):
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.client = client
        self.bucket = bucket
        self.key = key
        self.content_type = content_type
        self.part_size = part_size
        self.max_buffered = 0
        self._size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[tuple[int, str]] = []
        self._next_part = 1
        self._pending: Future[tuple[int, str]] | None = None
        self._in_flight = 0
        self._executor: ThreadPoolExecutor | None = None
        self._done = False

    @property
    def size(self) -> int:
        """Return the number of bytes written so far."""
        return self._size

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; full parts leave for the store as soon as they fill."""
        if self._done:
            raise ValueError("write to a closed object writer")
        buffer = self._buffer
        if isinstance(data, bytes) and len(buffer) + len(data) < self.part_size:
            # The common case (one NDJSON line at a time): no part fills up.
            buffer += data
            self._size += len(data)
            return
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            take = view[pos : pos + self.part_size - len(self._buffer)]
            self._buffer += take
            pos += len(take)
            self._size += len(take)
            if len(self._buffer) >= self.part_size:
                self._ship()

    def _upload_part(self, number: int, body: bytearray) -> tuple[int, str]:
        assert self._upload_id is not None
        with translated(self.bucket, self.key):
            resp = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=cast("bytes", body),  # botocore sends a bytearray as is; no copy
            )
        return number, resp["ETag"]

    def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._in_flight = 0
            self._parts.append(pending.result())

    def _ship(self) -> None:
        if self._upload_id is None:
            with translated(self.bucket, self.key):
                resp = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self.content_type
                )
            self._upload_id = resp["UploadId"]
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-part")
        if self._next_part > _MAX_PARTS:
            raise BulkheadError(f"{self.key}: more than {_MAX_PARTS} parts; raise the part size")
        # The most this writer ever holds: the part in flight (until it is waited for) and the full one.
        self.max_buffered = max(self.max_buffered, len(self._buffer) + self._in_flight)
        self._wait_pending()
        body, self._buffer = self._buffer, bytearray()
        assert self._executor is not None
        self._in_flight = len(body)
        self._pending = self._executor.submit(self._upload_part, self._next_part, body)
        self._next_part += 1

    def close(self) -> ObjectInfo:
        """Finish the upload and return the object's key, size and entity tag."""
        if self._done:
            raise ValueError("object writer already closed")
        self.max_buffered = max(self.max_buffered, len(self._buffer) + self._in_flight)
        try:
            if self._upload_id is None:
                with translated(self.bucket, self.key):
                    resp = self.client.put_object(
                        Bucket=self.bucket,
                        Key=self.key,
                        Body=bytes(self._buffer),
                        ContentType=self.content_type,
                    )
                etag = resp["ETag"]
            else:
                if self._buffer:
                    self._ship()
                self._wait_pending()
                parts = [{"PartNumber": n, "ETag": tag} for n, tag in sorted(self._parts)]
                with translated(self.bucket, self.key):
                    done = self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=self.key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    )
                etag = done["ETag"]
        except BaseException:
            self.abort()
            raise
        self._finish()
        return ObjectInfo(self.key, self._size, bare_etag(etag))

    def abort(self) -> None:
        """Abandon the upload: drop buffered bytes and abort the multipart upload, if one began."""
        if self._done:
            return
        if self._pending is not None:
            try:
                self._pending.result()
            except Exception:
                log.debug("part upload of %s failed while aborting", self.key, exc_info=True)
            self._pending = None
        if self._upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            except (ClientError, BotoCoreError):
                log.warning("could not abort the multipart upload of %s", self.key, exc_info=True)
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._buffer = bytearray()
        self._in_flight = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
