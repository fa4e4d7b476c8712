"""Byte-range planning of NDJSON files: every line is read by exactly one range."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator

import pytest

from core.ndjson_ranges import (
    ByteRange,
    Line,
    gunzip,
    is_gzip,
    line_numbers,
    plan_ranges,
    range_lines,
    read_from,
)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """Yield ``data`` in pieces of ``size`` bytes, as a network stream would."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def read_range(data: bytes, r: ByteRange, chunk: int = 7, max_line: int = 1 << 20) -> list[Line]:
    """Return the lines range ``r`` owns, reading ``data`` the way a worker reads an object store range."""
    return list(
        range_lines(chunked(data[read_from(r.start) :], chunk), r.start, r.stop, max_line_bytes=max_line)
    )


def all_lines(data: bytes, range_bytes: int, chunk: int = 7) -> list[Line]:
    """Return the lines of every range of ``data``, in range order."""
    out: list[Line] = []
    for r in plan_ranges(len(data), range_bytes):
        out.extend(read_range(data, r, chunk))
    return out


def expected(data: bytes) -> list[tuple[int, bytes]]:
    """Return (offset, line) for every non-blank line of ``data``, computed the obvious way."""
    out = []
    pos = 0
    for raw in data.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line.strip():
            out.append((pos, line))
        pos += len(raw) + 1
    return out


def test_ranges_cover_the_file_and_an_empty_file_has_none():
    # Given files of several sizes / When planned / Then the ranges tile the file, the last open-ended
    assert plan_ranges(0, 10) == []
    assert plan_ranges(25, 10) == [ByteRange(0, 10), ByteRange(10, 20), ByteRange(20, None)]
    assert plan_ranges(20, 10) == [ByteRange(0, 10), ByteRange(10, None)]
    assert plan_ranges(5, 10) == [ByteRange(0, None)]


def test_a_compressed_file_is_one_range():
    # Given a gzip file / When planned / Then one range covers it whatever its size
    assert plan_ranges(10_000, 10, compressed=True) == [ByteRange(0, None)]


def test_a_line_straddling_a_boundary_belongs_to_the_range_it_starts_in():
    # Given two lines where the first crosses the boundary at byte 8
    data = b'{"a":123456}\n{"b":2}\n'
    # When each range is read
    first = read_range(data, ByteRange(0, 8))
    second = read_range(data, ByteRange(8, None))
    # Then the first range owns the straddling line and the second only the line that starts in it
    assert [(line.offset, line.data) for line in first] == [(0, b'{"a":123456}')]
    assert [(line.offset, line.data) for line in second] == [(13, b'{"b":2}')]


def test_a_line_starting_exactly_at_a_boundary_belongs_to_the_later_range():
    # Given a boundary right after a newline
    data = b"aaaa\nbbbb\n"
    # When split at byte 5 / Then each range has one line
    assert [x.data for x in read_range(data, ByteRange(0, 5))] == [b"aaaa"]
    assert [x.data for x in read_range(data, ByteRange(5, None))] == [b"bbbb"]


def test_a_line_longer_than_several_ranges_is_read_once_by_the_range_it_starts_in():
    # Given a 100-byte line between two short ones and 10-byte ranges
    big = b'{"x":"' + b"y" * 90 + b'"}'
    data = b"{}\n" + big + b"\n" + b'{"z":1}\n'
    # When every range is read
    lines = all_lines(data, 10)
    # Then each line appears exactly once
    assert [x.data for x in lines] == [b"{}", big, b'{"z":1}']


@pytest.mark.parametrize("seed", range(40))
def test_every_line_is_read_exactly_once_whatever_the_ranges_and_chunks(seed: int):
    # Given a random NDJSON-like file with blank lines, CRLF, long lines and maybe no final newline
    rng = random.Random(seed)
    parts = []
    for _ in range(rng.randint(0, 60)):
        kind = rng.random()
        if kind < 0.1:
            parts.append(b"")
        elif kind < 0.2:
            parts.append(b"x" * rng.randint(50, 300) + b"\r")
        else:
            parts.append(b"l" * rng.randint(1, 40))
    data = b"\n".join(parts) + (b"\n" if rng.random() < 0.5 else b"")
    # When it is split into random-size ranges and read in random-size chunks
    lines = all_lines(data, rng.randint(1, 120), chunk=rng.randint(1, 64))
    # Then the lines and their offsets are exactly the file's
    assert [(x.offset, x.data) for x in lines] == expected(data)


def test_a_line_over_the_length_limit_is_reported_and_the_next_line_is_still_read():
    # Given a line of 50 bytes and a limit of 20
    data = b"short\n" + b"z" * 50 + b"\nafter\n"
    # When the file is read as one range
    lines = read_range(data, ByteRange(0, None), chunk=8, max_line=20)
    # Then the long line is flagged at its offset, without its bytes, and the neighbours are intact
    assert [(x.offset, x.data, x.too_long) for x in lines] == [
        (0, b"short", False),
        (6, b"", True),
        (57, b"after", False),
    ]


def test_line_numbers_count_physical_lines_including_blank_ones():
    # Given a file with a blank line
    data = b"a\n\nb\nc\n"
    # When the numbers of the lines at offsets 0, 3 and 5 are asked for
    numbers = line_numbers(chunked(data, 2), [5, 0, 3])
    # Then they are 1, 3 and 4
    assert numbers == {0: 1, 3: 3, 5: 4}


def test_gzip_streams_are_recognised_and_decompressed_including_several_members():
    # Given a file made of two gzip members
    data = gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"b":2}\n')
    # When it is decompressed in small chunks
    assert is_gzip(data) and not is_gzip(b'{"a":1}')
    out = b"".join(gunzip(chunked(data, 5)))
    # Then both members come out
    assert out == b'{"a":1}\n{"b":2}\n'


def test_a_truncated_gzip_stream_is_an_error_not_a_short_file():
    # Given a gzip file cut in the middle
    data = gzip.compress(b'{"a":1}\n' * 100)[:-10]
    # When it is decompressed / Then it fails clearly
    with pytest.raises(ValueError, match="ends before"):
        b"".join(gunzip(chunked(data, 16)))
