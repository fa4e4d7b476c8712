"""The rolling NDJSON writer's file boundaries and the object key layout, on the in-memory object store."""

from __future__ import annotations

import pytest

from core.errors import InvalidRequest, NotFound
from storage.objectstore import MemoryObjectStore, RollingNdjsonWriter, job_prefix, ndjson_key


def test_a_file_may_fill_up_to_exactly_the_limit_and_the_next_line_starts_a_new_file() -> None:
    # Given a limit of 20 bytes and lines of 9 bytes (10 with the newline)
    store = MemoryObjectStore()
    writer = RollingNdjsonWriter(store, lambda n: f"x/Patient-{n}.ndjson", max_bytes=20)
    # When five lines are written
    writer.write_lines([b'{"n":%03d}' % i for i in range(5)])
    files = writer.close()
    # Then files hold 2, 2 and 1 lines, each at most 20 bytes, numbered from 1
    assert [(f.key, f.lines, f.size) for f in files] == [
        ("x/Patient-1.ndjson", 2, 20),
        ("x/Patient-2.ndjson", 2, 20),
        ("x/Patient-3.ndjson", 1, 10),
    ]
    assert store.objects["x/Patient-3.ndjson"] == b'{"n":004}\n'


def test_blocks_of_complete_lines_are_never_split_across_files() -> None:
    # Given blocks of three lines each and a limit that fits one and a half blocks
    store = MemoryObjectStore()
    block = b'{"a":1}\n{"b":2}\n{"c":3}\n'
    writer = RollingNdjsonWriter(store, lambda n: f"b/Obs-{n}.ndjson", max_bytes=len(block) * 3 // 2, first=7)
    # When two blocks are written
    writer.write_block(block)
    writer.write_block(bytearray(block))
    files = writer.close()
    # Then each block is one whole file with its three lines, numbered from the first index given
    assert [(f.key, f.lines) for f in files] == [("b/Obs-7.ndjson", 3), ("b/Obs-8.ndjson", 3)]
    assert all(store.objects[f.key] == block for f in files)
    assert writer.lines == 6


def test_lines_that_would_break_ndjson_are_refused() -> None:
    # Given a writer
    writer = RollingNdjsonWriter(MemoryObjectStore(), lambda n: f"k-{n}", max_bytes=100)
    # When a line holds a newline, is empty, or a block does not end a line / Then the writer refuses it
    with pytest.raises(ValueError):
        writer.write_line(b'{"a":\n1}')
    with pytest.raises(ValueError):
        writer.write_line(b"")
    with pytest.raises(ValueError):
        writer.write_block(b'{"a":1}')
    assert writer.close() == []


def test_nothing_written_means_no_file_at_all() -> None:
    # Given a writer that receives no line
    store = MemoryObjectStore()
    # When it closes / Then no object exists
    assert RollingNdjsonWriter(store, lambda n: f"k-{n}", max_bytes=100).close() == []
    assert store.objects == {}


def test_object_keys_follow_prefix_partition_job_and_numbered_file() -> None:
    # Given a prefix, a partition, a job id and a type / When keys are built
    # Then they follow {prefix}/{partition}/{job}/{type}-{n}.ndjson, and an empty prefix is left out
    assert ndjson_key("bulkhead", "clinic-a", 42, "Patient", 3) == "bulkhead/clinic-a/42/Patient-3.ndjson"
    assert job_prefix("/exports/", "clinic-a", "j1") == "exports/clinic-a/j1/"
    assert job_prefix("", "clinic-a", "j1") == "clinic-a/j1/"


def test_the_memory_store_answers_like_the_s3_one_for_missing_objects_and_ranges() -> None:
    # Given one stored object
    store = MemoryObjectStore()
    store.put_bytes("a/b", b"0123456789")
    # When it is read in ranges and a missing key is asked for
    # Then ranges are half-open, and a missing key is NotFound or None
    assert b"".join(store.get_stream("a/b", (2, 5))) == b"234"
    assert b"".join(store.get_stream("a/b", (8, None))) == b"89"
    with pytest.raises(NotFound):
        store.get_stream("a/c")
    assert store.head("a/c") is None
    with pytest.raises(InvalidRequest):
        store.delete_prefix("")
