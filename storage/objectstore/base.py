"""What every object store offers (a Protocol), its values, and the layout of Bulkhead's object keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from core.errors import InvalidRequest
from core.partition import validate_partition_name

#: The media type of bulk data files.
NDJSON = "application/fhir+ndjson"

#: S3 refuses multipart parts under 5 MiB (except the last); Bulkhead uses at least 8 MiB.
MIN_PART_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key, its size in bytes and its entity tag (without quotes)."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class WrittenFile:
    """One NDJSON object written by a rolling writer: where, how many lines, how many bytes."""

    key: str
    index: int
    lines: int
    size: int
    etag: str


class ObjectWriter(Protocol):
    """A streaming upload of one object: write bytes, then close (or abort)."""

    key: str

    @property
    def size(self) -> int:
        """Return the number of bytes written so far."""
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the object."""
        ...

    def close(self) -> ObjectInfo:
        """Finish the upload and return the stored object's description."""
        ...

    def abort(self) -> None:
        """Abandon the upload; nothing is stored under the key by this writer."""
        ...

    def __enter__(self) -> ObjectWriter: ...

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...


class ObjectStore(Protocol):
    """An S3-style bucket of objects. Errors are Bulkhead's own (``core.errors``)."""

    bucket: str
    prefix: str

    def job_prefix(self, partition: str, job_id: str | int) -> str:
        """Return the key prefix under which one job of ``partition`` keeps its objects."""
        ...

    def ndjson_key(self, partition: str, job_id: str | int, name: str, n: int) -> str:
        """Return the key of NDJSON file ``n`` of ``name`` for a job of ``partition``."""
        ...

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        ...

    def open_writer(self, key: str, *, content_type: str = ...) -> ObjectWriter:
        """Start a streaming upload to ``key``; a retried upload to the same key replaces the object."""
        ...

    def put_bytes(self, key: str, data: bytes, *, content_type: str = ...) -> ObjectInfo:
        """Store ``data`` under ``key`` in one request."""
        ...

    def get_stream(
        self,
        key: str,
        byte_range: tuple[int, int | None] | None = None,
        *,
        if_match: str | None = None,
        chunk_size: int = ...,
    ) -> Iterator[bytes]:
        """Return the object's bytes as chunks; ``byte_range`` is ``(start, stop)``, stop exclusive/None."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's size and entity tag, or None when there is no such object."""
        ...

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with ``prefix``, in lexicographic order."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object (and unfinished upload) under ``prefix``; return how many objects went."""
        ...

    def presign_get(self, key: str, expires_seconds: int, *, content_type: str | None = None) -> str:
        """Return a URL that downloads ``key`` without credentials until it expires."""
        ...


def _segment(value: str, what: str) -> str:
    if not value or "/" in value or value in {".", ".."}:
        raise InvalidRequest(f"Invalid {what} for an object key: {value!r}")
    return value


def job_prefix(prefix: str, partition: str, job_id: str | int) -> str:
    """Return the key prefix of one job's objects: ``{prefix}/{partition}/{job id}/``."""
    head = prefix.strip("/")
    parts = [validate_partition_name(partition), _segment(str(job_id), "job id")]
    return "/".join([head, *parts] if head else parts) + "/"


def ndjson_key(prefix: str, partition: str, job_id: str | int, name: str, n: int) -> str:
    """Return the key of NDJSON file ``n`` of ``name`` (a resource type): ``…/{job id}/{name}-{n}.ndjson``."""
    return f"{job_prefix(prefix, partition, job_id)}{_segment(name, 'file name')}-{int(n)}.ndjson"
