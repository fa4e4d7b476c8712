"""Export objects stored gzip-compressed: a store wrapper whose writers deflate what they are given.

With ``BULKHEAD_EXPORT_GZIP`` on, a worker writes each NDJSON object as one gzip stream (level 1, with
ISA-L where available: ``core.deflate``), so a tenth of the bytes or less goes to the object store. Sizes
reported to the rolling writer and the manifest are the uncompressed ones (files still roll over at
``export_file_max_bytes`` of NDJSON); the API serves such an object as is to a client that accepts gzip,
and inflates it for one that does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from core.deflate import LEVEL, gunzip_chunks, gzip_compressor
from storage.objectstore import ObjectInfo, ObjectStore, ObjectWriter

GZIP = "gzip"


class GzipObjectWriter:
    """Deflate everything written into one gzip stream on the wrapped writer."""

    def __init__(self, inner: ObjectWriter, level: int = LEVEL):
        self.inner = inner
        self.key = inner.key
        self._packer = gzip_compressor(level)
        self._size = 0

    @property
    def size(self) -> int:
        """Return the number of uncompressed bytes written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Compress ``data`` onto the object."""
        self._size += len(data)
        out = self._packer.compress(data)
        if out:
            self.inner.write(out)

    def close(self) -> ObjectInfo:
        """Finish the gzip stream and the object; the size returned is the uncompressed one."""
        tail = self._packer.flush()
        if tail:
            self.inner.write(tail)
        info = self.inner.close()
        return ObjectInfo(info.key, self._size, info.etag)

    def abort(self) -> None:
        """Abandon the object."""
        self.inner.abort()

    def __enter__(self) -> GzipObjectWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class GzipWritingStore:
    """An object store whose ``open_writer`` gzips (the only method a rolling writer calls)."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def open_writer(self, key: str, *, content_type: str) -> GzipObjectWriter:
        """Open a compressing writer of ``key``."""
        return GzipObjectWriter(self.store.open_writer(key, content_type=content_type))


def inflate(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a stored gzip object, chunk by chunk."""
    return gunzip_chunks(chunks)
