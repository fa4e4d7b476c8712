"""The S3 object store against a real S3-compatible server (SeaweedFS, or the one the environment names)."""

from __future__ import annotations

import hashlib
import os
import secrets
import tracemalloc
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from cli.embedded import free_port
from core.errors import BulkheadError, InvalidRequest, NotFound, PreconditionFailed, ServiceUnavailable
from core.settings import Settings
from harness.services import S3Settings
from storage.objectstore import MIN_PART_SIZE, RollingNdjsonWriter, S3ObjectStore, object_store_from_settings

MiB = 1024 * 1024


def _job() -> str:
    return secrets.token_hex(8)


def _read(store: S3ObjectStore, key: str) -> bytes:
    return b"".join(store.get_stream(key))


def _lines(n: int, width: int = 90) -> list[bytes]:
    return [b'{"resourceType":"Patient","id":"p%06d","x":"%s"}' % (i, b"y" * width) for i in range(n)]


def test_an_object_larger_than_one_part_goes_up_in_parts_and_reads_back_whole(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given 20 MiB of data written in uneven pieces
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    data = os.urandom(20 * MiB + 12345)
    # When it is streamed through a writer
    with object_store.open_writer(key) as writer:
        for start in range(0, len(data), 3 * MiB + 17):
            writer.write(data[start : start + 3 * MiB + 17])
    info = object_store.head(key)
    # Then the object holds exactly those bytes, uploaded as a three-part multipart upload
    assert info is not None and info.size == len(data)
    assert info.etag.endswith("-3")
    assert hashlib.sha256(_read(object_store, key)).digest() == hashlib.sha256(data).digest()


def test_a_small_object_goes_up_in_a_single_put(object_store: S3ObjectStore, partition: str) -> None:
    # Given a writer that receives far less than a part
    key = object_store.ndjson_key(partition, _job(), "Observation", 1)
    writer = object_store.open_writer(key)
    writer.write(b'{"resourceType":"Observation"}\n')
    # When it closes
    info = writer.close()
    # Then one plain PUT stored it (no multipart entity tag) and the store agrees on size and tag
    assert "-" not in info.etag
    assert object_store.head(key) == info
    assert _read(object_store, key) == b'{"resourceType":"Observation"}\n'


def test_streaming_100_mb_never_holds_more_than_two_parts_in_memory(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given 100 MB produced 64 KiB at a time, never held whole by the test
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    piece = os.urandom(64 * 1024)
    total = 100 * 1000 * 1000
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        # When it is streamed through one writer
        writer = object_store.open_writer(key)
        written = 0
        counter = 0
        while written < total:
            chunk = counter.to_bytes(8, "big") + piece[: min(len(piece), total - written) - 8]
            writer.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            counter += 1
        info = writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then the writer held at most two parts at once, and Python's allocations stayed near that
    assert writer.max_buffered <= 2 * MIN_PART_SIZE
    assert peak < 3 * MIN_PART_SIZE, f"peak traced memory {peak / MiB:.1f} MiB"
    # And the stored object is the 100 MB that were written
    assert info.size == total == object_store.head(key).size  # type: ignore[union-attr]
    check = hashlib.sha256()
    for chunk in object_store.get_stream(key):
        check.update(chunk)
    assert check.digest() == digest.digest()


def test_the_rolling_writer_starts_the_next_object_before_one_would_pass_the_limit(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given 100 lines of about 140 bytes and a limit of 1,000 bytes a file
    job = _job()
    lines = _lines(100)
    # When they are written through a rolling writer
    with RollingNdjsonWriter(
        object_store, lambda n: object_store.ndjson_key(partition, job, "Patient", n), max_bytes=1000
    ) as writer:
        writer.write_lines(lines)
    files = writer.files
    # Then every file stays under the limit, keys are numbered from 1, and counts add up
    assert len(files) > 1
    assert all(f.size <= 1000 for f in files)
    assert [f.key for f in files] == [
        object_store.ndjson_key(partition, job, "Patient", n + 1) for n in range(len(files))
    ]
    assert sum(f.lines for f in files) == 100
    stored = b"".join(_read(object_store, f.key) for f in files)
    assert stored == b"".join(line + b"\n" for line in lines)
    for f in files:
        info = object_store.head(f.key)
        assert info is not None and (info.size, info.etag) == (f.size, f.etag)
        assert _read(object_store, f.key).count(b"\n") == f.lines


def test_a_retried_write_overwrites_the_same_objects_and_never_duplicates_a_line(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given a first attempt that wrote two files and died while writing the third
    job = _job()
    lines = _lines(30)

    def key_for(n: int) -> str:
        return object_store.ndjson_key(partition, job, "Patient", n)

    first = RollingNdjsonWriter(object_store, key_for, max_bytes=1000)
    first.write_lines(lines[:20])
    first.abort()
    # When the retry writes the whole chunk again
    with RollingNdjsonWriter(object_store, key_for, max_bytes=1000) as retry:
        retry.write_lines(lines)
    # Then the job's prefix holds exactly the retry's files, with every line once
    keys = list(object_store.list_keys(object_store.job_prefix(partition, job)))
    assert keys == sorted(f.key for f in retry.files)
    stored = b"".join(_read(object_store, f.key) for f in retry.files).splitlines()
    assert stored == lines


def test_a_line_longer_than_the_limit_gets_an_object_of_its_own(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given a limit of 200 bytes and a 500-byte line between two short ones
    job = _job()
    big = b'{"resourceType":"Binary","data":"%s"}' % (b"A" * 460)
    # When they are written
    with RollingNdjsonWriter(
        object_store, lambda n: object_store.ndjson_key(partition, job, "Binary", n), max_bytes=200
    ) as writer:
        writer.write_lines([b'{"a":1}', big, b'{"b":2}'])
    # Then the long line sits alone in the middle file
    assert [f.lines for f in writer.files] == [1, 1, 1]
    assert _read(object_store, writer.files[1].key) == big + b"\n"


def test_byte_ranges_return_exactly_the_requested_bytes(object_store: S3ObjectStore, partition: str) -> None:
    # Given a stored object of 1,000 known bytes
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    data = bytes(range(256)) * 3 + bytes(232)
    object_store.put_bytes(key, data)

    def read(start: int, stop: int | None) -> bytes:
        return b"".join(object_store.get_stream(key, (start, stop)))

    # When ranges are read / Then each is the half-open slice of the object
    assert read(0, 10) == data[0:10]
    assert read(10, None) == data[10:]
    assert read(990, 5000) == data[990:]
    assert read(500, 500) == b""
    assert read(1000, None) == b""
    assert b"".join(object_store.get_stream(key, (3, 700), chunk_size=64)) == data[3:700]
    with pytest.raises(InvalidRequest):
        object_store.get_stream(key, (10, 5))


def test_a_missing_object_is_not_found_for_reads_and_none_for_head(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given a key nothing was written to
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    # When it is read, range-read and headed / Then reads raise NotFound and head says None
    with pytest.raises(NotFound):
        object_store.get_stream(key)
    with pytest.raises(NotFound):
        object_store.get_stream(key, (0, 10))
    with pytest.raises(NotFound):
        object_store.get_stream(key, (5, 5))
    assert object_store.head(key) is None


def test_a_read_that_names_an_old_entity_tag_fails_once_the_object_changed(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given an object whose entity tag was taken, then replaced
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    old = object_store.put_bytes(key, b'{"v":1}\n')
    assert b"".join(object_store.get_stream(key, if_match=old.etag)) == b'{"v":1}\n'
    object_store.put_bytes(key, b'{"v":2}\n')
    # When it is read with the old tag / Then the read is refused
    with pytest.raises(PreconditionFailed):
        object_store.get_stream(key, if_match=old.etag)


def test_a_presigned_url_downloads_with_plain_requests_and_a_tampered_one_is_refused(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given a stored NDJSON file
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    object_store.put_bytes(key, b'{"resourceType":"Patient","id":"1"}\n')
    # When a pre-signed URL is fetched without any credentials
    url = object_store.presign_get(key, 300, content_type="application/fhir+ndjson")
    response = requests.get(url, timeout=10)
    # Then the file comes back with the requested media type
    assert response.status_code == 200
    assert response.content == b'{"resourceType":"Patient","id":"1"}\n'
    assert response.headers["Content-Type"] == "application/fhir+ndjson"
    # And a URL for another key with the same signature, or with no signature, is refused
    parts = urlsplit(url)
    other = urlunsplit(parts._replace(path=parts.path.replace("Patient-1", "Patient-2")))
    assert requests.get(other, timeout=10).status_code == 403
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("X-Amz-")])
    assert requests.get(urlunsplit(parts._replace(query=query)), timeout=10).status_code == 403
    with pytest.raises(InvalidRequest):
        object_store.presign_get(key, 8 * 24 * 3600)


def test_deleting_one_jobs_prefix_leaves_the_same_job_id_of_another_partition(
    object_store: S3ObjectStore, partition: str, other_partition: str
) -> None:
    # Given the same job id and file names in two partitions, and an unfinished upload in the first
    job = _job()
    for p in (partition, other_partition):
        for n in (1, 2):
            object_store.put_bytes(object_store.ndjson_key(p, job, "Patient", n), b"{}\n")
    unfinished = object_store.open_writer(object_store.ndjson_key(partition, job, "Observation", 1))
    unfinished.write(os.urandom(MIN_PART_SIZE + 1))
    # When the first partition's job prefix is deleted
    deleted = object_store.delete_prefix(object_store.job_prefix(partition, job))
    # Then its objects and upload are gone, and the other partition's objects are all there
    assert deleted == 2
    assert list(object_store.list_keys(object_store.job_prefix(partition, job))) == []
    uploads = object_store.client.list_multipart_uploads(
        Bucket=object_store.bucket, Prefix=object_store.job_prefix(partition, job)
    )
    assert uploads.get("Uploads", []) == []
    assert list(object_store.list_keys(object_store.job_prefix(other_partition, job))) == [
        object_store.ndjson_key(other_partition, job, "Patient", n) for n in (1, 2)
    ]
    unfinished.abort()


def test_an_aborted_writer_leaves_neither_an_object_nor_an_upload(
    object_store: S3ObjectStore, partition: str
) -> None:
    # Given a writer that already sent a part
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    writer = object_store.open_writer(key)
    writer.write(os.urandom(MIN_PART_SIZE + 10))
    # When it is aborted
    writer.abort()
    # Then nothing is stored and no upload is pending under the key
    assert object_store.head(key) is None
    uploads = object_store.client.list_multipart_uploads(Bucket=object_store.bucket, Prefix=key)
    assert uploads.get("Uploads", []) == []


def test_an_error_inside_the_writer_block_stores_nothing(object_store: S3ObjectStore, partition: str) -> None:
    # Given a writer used as a context manager
    key = object_store.ndjson_key(partition, _job(), "Patient", 1)
    # When the block fails half-way
    with pytest.raises(RuntimeError), object_store.open_writer(key) as writer:
        writer.write(b"{}\n")
        raise RuntimeError("the database went away")
    # Then no object appears
    assert object_store.head(key) is None


def test_keys_refuse_names_that_would_leave_the_partitions_prefix(object_store: S3ObjectStore) -> None:
    # Given partition names and file names that try to climb or split the key layout
    # When keys are built / Then they are refused
    for partition in ("..", ".", "a/b", "", "SYSTEM"):
        with pytest.raises(InvalidRequest):
            object_store.job_prefix(partition, "1")
    with pytest.raises(InvalidRequest):
        object_store.ndjson_key("p1", "..", "Patient", 1)
    with pytest.raises(InvalidRequest):
        object_store.ndjson_key("p1", "1", "../Patient", 1)


def test_wrong_credentials_surface_as_a_bulkhead_error(s3_settings: S3Settings, partition: str) -> None:
    # Given a store configured with a wrong secret
    settings = s3_settings.apply(Settings())
    bad = object_store_from_settings(settings.__class__(**{**settings.__dict__, "s3_secret_key": "wrong"}))
    # When it is used / Then the failure is Bulkhead's own error, not boto3's
    with pytest.raises(BulkheadError) as caught:
        bad.put_bytes(bad.ndjson_key(partition, "1", "Patient", 1), b"{}\n")
    assert not isinstance(caught.value, NotFound)
    assert "credentials" in caught.value.message


def test_an_unreachable_store_is_service_unavailable(partition: str) -> None:
    # Given a store whose endpoint nobody listens on
    store = object_store_from_settings(
        Settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}", s3_access_key="a", s3_secret_key="b")
    )
    # When it is used / Then it reports the store as unavailable
    with pytest.raises(ServiceUnavailable):
        store.head(store.ndjson_key(partition, "1", "Patient", 1))
