"""An object store in a dict, for unit tests without I/O; behaves like the S3 one at its interface."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from core.errors import InvalidRequest, NotFound, PreconditionFailed
from storage.objectstore.base import NDJSON, ObjectInfo, job_prefix, ndjson_key


class MemoryWriter:
    """A writer that keeps the object in memory until ``close``."""

    def __init__(self, store: MemoryObjectStore, key: str, content_type: str):
        self.store = store
        self.key = key
        self.content_type = content_type
        self._buffer = bytearray()
        self._done = False

    @property
    def size(self) -> int:
        """Return the number of bytes written so far."""
        return len(self._buffer)

    def __enter__(self) -> MemoryWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``."""
        if self._done:
            raise ValueError("write to a closed object writer")
        self._buffer += data

    def close(self) -> ObjectInfo:
        """Store the object and return its description."""
        if self._done:
            raise ValueError("object writer already closed")
        self._done = True
        return self.store.put_bytes(self.key, bytes(self._buffer), content_type=self.content_type)

    def abort(self) -> None:
        """Drop what was written."""
        self._done = True
        self._buffer = bytearray()


class MemoryObjectStore:
    """A bucket held in a dict: thread-safe, no persistence."""

    def __init__(self, bucket: str = "bulkhead", *, prefix: str = "bulkhead"):
        self.bucket = bucket
        self.prefix = prefix
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def job_prefix(self, partition: str, job_id: str | int) -> str:
        """Return the key prefix under which one job of ``partition`` keeps its objects."""
        return job_prefix(self.prefix, partition, job_id)

    def ndjson_key(self, partition: str, job_id: str | int, name: str, n: int) -> str:
        """Return the key of NDJSON file ``n`` of ``name`` for a job of ``partition``."""
        return ndjson_key(self.prefix, partition, job_id, name, n)

    def ensure_bucket(self) -> None:
        """Do nothing: the bucket always exists."""

    def open_writer(self, key: str, *, content_type: str = NDJSON) -> MemoryWriter:
        """Start an upload to ``key``."""
        return MemoryWriter(self, key, content_type)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/fhir+ndjson"
    ) -> ObjectInfo:
        """Store ``data`` under ``key``."""
        with self._lock:
            self.objects[key] = bytes(data)
        return ObjectInfo(key, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest())

    def get_stream(
        self,
        key: str,
        byte_range: tuple[int, int | None] | None = None,
        *,
        if_match: str | None = None,
        chunk_size: int = 1024 * 1024,
    ) -> Iterator[bytes]:
        """Return the object's bytes (or a half-open range of them) as chunks."""
        info = self.head(key)
        if info is None:
            raise NotFound("No such file")
        if if_match is not None and if_match.strip('"') != info.etag:
            raise PreconditionFailed(f"The object {key} changed since its entity tag was taken")
        data = self.objects[key]
        if byte_range is not None:
            start, stop = byte_range
            if start < 0 or (stop is not None and stop < start):
                raise InvalidRequest(f"Invalid byte range {byte_range!r}")
            data = data[start:stop]
        return iter([data[i : i + chunk_size] for i in range(0, len(data), chunk_size)])

    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's size and entity tag, or None."""
        with self._lock:
            data = self.objects.get(key)
        if data is None:
            return None
        return ObjectInfo(key, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest())

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with ``prefix``, in lexicographic order."""
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
        yield from keys

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many went."""
        if not prefix.strip("/"):
            raise InvalidRequest("Refusing to delete with an empty prefix")
        with self._lock:
            keys = [k for k in self.objects if k.startswith(prefix)]
            for k in keys:
                del self.objects[k]
        return len(keys)

    def presign_get(self, key: str, expires_seconds: int, *, content_type: str | None = None) -> str:
        """Return a memory:// URL naming the object (not downloadable over HTTP)."""
        return f"memory://{self.bucket}/{key}?expires={expires_seconds}"
