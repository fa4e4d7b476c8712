"""Gzip streams for export objects and downloads: ISA-L where its wheel installs, zlib otherwise.

ISA-L's level 1 deflates NDJSON about five times faster than zlib's level 1 (2.3 GB/s against 440 MB/s on
synthetic resources here) and compresses a little better; both write standard gzip that any client reads.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Protocol


class Compressor(Protocol):
    """What a zlib-style compression object offers."""

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...

    def flush(self, mode: int = ..., /) -> bytes: ...


_fast: ModuleType | None
try:
    from isal import isal_zlib as _fast
except ImportError:  # pragma: no cover - platforms without an ISA-L wheel
    _fast = None

#: Level 1 is fast and still shrinks NDJSON more than tenfold.
LEVEL = 1
_GZIP_WBITS = 31  # a gzip header and trailer around the deflate stream


def gzip_compressor(level: int = LEVEL) -> Compressor:
    """Return a compressor that writes one gzip stream."""
    if _fast is not None:
        packer: Compressor = _fast.compressobj(level, _fast.DEFLATED, _GZIP_WBITS)
        return packer
    return zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)


def gzip_chunks(chunks: Iterable[bytes], level: int = LEVEL) -> Iterator[bytes]:
    """Compress a byte stream as one gzip stream, chunk by chunk."""
    packer = gzip_compressor(level)
    for chunk in chunks:
        out = packer.compress(chunk)
        if out:
            yield out
    yield packer.flush()


def gunzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress one gzip stream, chunk by chunk (zlib: it reads any gzip writer's output)."""
    unpacker = zlib.decompressobj(_GZIP_WBITS)
    for chunk in chunks:
        out = unpacker.decompress(chunk)
        if out:
            yield out
    tail = unpacker.flush()
    if tail:
        yield tail
