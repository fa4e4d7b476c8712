"""Split NDJSON files into byte ranges and read back the lines each range owns.

The rule: a line belongs to the range in which its first byte lies. A worker reading range ``[start, stop)``
is handed the file's bytes from ``read_from(start)`` (one byte before ``start``, so that it can tell whether
``start`` opens a line), skips the tail of a line that began in the previous range, yields every line that
starts before ``stop`` and reads past ``stop`` to finish the last of them. Every line is therefore read by
exactly one range, and a line longer than a whole range is read by the range it starts in (the ranges it
covers entirely yield nothing).

Gzip streams cannot be entered in the middle: a compressed file is one range, decompressed on the fly
(``gunzip``). Compression is recognised by the gzip magic bytes, whatever the file is called.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ByteRange:
    """One range of a file: ``start`` inclusive, ``stop`` exclusive; ``stop`` None means to the end."""

    start: int
    stop: int | None


@dataclass(frozen=True)
class Line:
    """One line of an NDJSON file: its byte offset in the (decompressed) file and its bytes.

    ``data`` excludes the line break. ``too_long`` marks a line over the length limit, whose bytes were
    dropped; it is reported, not parsed.
    """

    offset: int
    data: bytes
    too_long: bool = False


def plan_ranges(size: int, range_bytes: int, *, compressed: bool = False) -> list[ByteRange]:
    """Return the ranges that cover a file of ``size`` bytes, each about ``range_bytes`` long.

    An empty file has no range; a compressed file is one range.
    """
    if range_bytes <= 0:
        raise ValueError("range_bytes must be positive")
    if size <= 0:
        return []
    if compressed:
        return [ByteRange(0, None)]
    ranges = []
    start = 0
    while start < size:
        stop = start + range_bytes
        ranges.append(ByteRange(start, stop if stop < size else None))
        start = stop
    return ranges


def read_from(start: int) -> int:
    """Return the first byte a reader of a range starting at ``start`` must be given."""
    return max(start - 1, 0)


def range_lines(
    chunks: Iterable[bytes],
    start: int,
    stop: int | None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[Line]:
    """Yield the lines that range ``[start, stop)`` owns; ``chunks`` begin at byte ``read_from(start)``.

    Blank lines are skipped. A trailing carriage return is dropped with the line feed. A line over
    ``max_line_bytes`` is yielded with ``too_long`` set and its bytes dropped.
    """
    offset = read_from(start)  # file offset of the first byte of the current chunk
    skipping = (
        start > 0
    )  # the bytes before the first newline at or after start - 1 belong to a previous range
    line_start = 0 if skipping else start
    parts: list[bytes] = []  # the start of the current line, carried over from earlier chunks
    carried = 0
    too_long = False
    for chunk in chunks:
        i = 0
        size = len(chunk)
        while i < size:
            nl = chunk.find(b"\n", i)
            if skipping:
                if nl < 0:
                    break
                skipping = False
                i = nl + 1
                line_start = offset + i
                continue
            if stop is not None and line_start >= stop:
                return
            if nl < 0:
                if not too_long:
                    parts.append(chunk[i:])
                    carried += size - i
                    if carried > max_line_bytes:
                        too_long, parts, carried = True, [], 0
                break
            if too_long:
                yield Line(line_start, b"", too_long=True)
                too_long = False
            elif parts:
                parts.append(chunk[i:nl])
                data = b"".join(parts)
                parts, carried = [], 0
                if len(data) > max_line_bytes:
                    yield Line(line_start, b"", too_long=True)
                else:
                    yield from _emit(line_start, data)
            elif nl - i > max_line_bytes:
                yield Line(line_start, b"", too_long=True)
            else:
                yield from _emit(line_start, chunk[i:nl])
            i = nl + 1
            line_start = offset + i
        offset += size
    if skipping or (stop is not None and line_start >= stop):
        return
    if too_long:
        yield Line(line_start, b"", too_long=True)
    elif parts:
        yield from _emit(line_start, b"".join(parts))


def _emit(offset: int, data: bytes) -> Iterator[Line]:
    if data.endswith(b"\r"):
        data = data[:-1]
    if data.strip():
        yield Line(offset, data)


def line_numbers(chunks: Iterable[bytes], offsets: Iterable[int]) -> dict[int, int]:
    """Return the 1-based line number of each line starting at one of ``offsets``.

    ``chunks`` are the (decompressed) file's bytes from byte 0; they are read only as far as the largest
    offset. Used when a range has something to report: ranges do not know how many lines precede them.
    """
    wanted = sorted(set(offsets))
    numbers: dict[int, int] = {}
    if not wanted:
        return numbers
    seen = 0
    newlines = 0
    k = 0
    for chunk in chunks:
        end = seen + len(chunk)
        while k < len(wanted) and wanted[k] <= end:
            numbers[wanted[k]] = newlines + chunk.count(b"\n", 0, wanted[k] - seen) + 1
            k += 1
        if k == len(wanted):
            return numbers
        newlines += chunk.count(b"\n")
        seen = end
    while k < len(wanted):
        numbers[wanted[k]] = newlines + 1
        k += 1
    return numbers


def is_gzip(head: bytes) -> bool:
    """Return whether a file starting with ``head`` is gzip-compressed."""
    return head.startswith(GZIP_MAGIC)


def gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a gzip stream chunk by chunk, including files of several concatenated members."""
    decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    member_open = False  # bytes of a member were fed and its end marker not seen yet
    for chunk in chunks:
        data = chunk
        while data:
            member_open = True
            try:
                out = decoder.decompress(data)
            except zlib.error as exc:
                raise ValueError(f"The gzip stream is corrupt: {exc}") from None
            if out:
                yield out
            if decoder.eof:
                member_open = False
                data = decoder.unused_data
                decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            else:
                data = b""
    if member_open:
        raise ValueError("The gzip stream ends before its end marker")
