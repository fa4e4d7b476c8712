"""Where import files come from: an S3 object (``s3://bucket/key``) or an HTTP(S) URL, within the policy.

Both sit behind one small Protocol, ``ImportSource``: ``head()`` for the size and entity tag, ``stream()`` for
the bytes from an offset, refusing a file whose entity tag changed. ``open_source`` applies the input policy
(``core/importpolicy.py``) every time a source is opened, at kick-off, planning and in every worker, and HTTP
goes through ``storage.importfetch``, which checks each address actually connected to.

Every failure reads ``input N could not be read: <reason>`` (``core.importpolicy.unreadable``): refused by
the policy, 401/403 and listings are *not allowed*, 404/410 *not found*, connection failures, 429 and 5xx
*unreachable* (retried), a changed entity tag *changed*; nothing a server answered, and no connection error
text, reaches the job's result. HTTP reads ask for ``Range: bytes=start-``; a server that ignores it (200
instead of 206) still works, the skipped bytes are read and dropped. Bytes are read as sent (gzip is
recognised by its magic bytes, not undone by the transport).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import requests

from core.errors import BulkheadError, InputUnreadable, NotFound, PreconditionFailed, ServiceUnavailable
from core.importpolicy import (
    CHANGED,
    NOT_ALLOWED,
    NOT_FOUND,
    NOT_NDJSON,
    UNREACHABLE,
    InputPolicy,
    display_url,
    unreadable,
)
from core.importspec import parse_input_url
from storage.importfetch import AddressRefused, policy_session
from storage.objectstore.base import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)
_CHUNK = 1024 * 1024
_TIMEOUT = (10, 120)
MAX_PREFIX_OBJECTS = 10_000
#: Content types of directory and bucket listings: never imported (a listing is not the tenant's data).
_LISTINGS = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")


def unreachable(index: int) -> ServiceUnavailable:
    """Return the (retried) error of an input whose server could not be reached."""
    return ServiceUnavailable(f"input {index} could not be read: {UNREACHABLE}", retry_after=5)


def changed(index: int) -> PreconditionFailed:
    """Return the error of an input whose entity tag changed."""
    return PreconditionFailed(f"input {index} could not be read: {CHANGED}")


class ImportSource(Protocol):
    """One input file."""

    url: str

    def head(self) -> ObjectInfo | None:
        """Return the file's size and entity tag, or None when there is no such file."""
        ...

    def stream(self, start: int = 0, *, etag: str | None = None) -> Iterator[bytes]:
        """Yield the bytes from ``start``; raise PreconditionFailed if the entity tag is not ``etag``."""
        ...


def _s3_failure(index: int, exc: BulkheadError) -> BulkheadError:
    if isinstance(exc, InputUnreadable):
        return exc
    if isinstance(exc, NotFound):
        return unreadable(index, NOT_FOUND)
    if isinstance(exc, PreconditionFailed):
        return changed(index)
    if isinstance(exc, ServiceUnavailable):
        return unreachable(index)
    return unreadable(index, NOT_ALLOWED)


class S3Source:
    """An object of the S3 server Bulkhead uses, in a bucket the policy allows."""

    def __init__(self, url: str, index: int, store: ObjectStore, bucket: str, key: str):
        self.url = url
        self.index = index
        self.key = key
        self.store = store
        if bucket != store.bucket:
            other = getattr(store, "with_bucket", None)
            if other is None:
                raise unreadable(index, NOT_FOUND)
            self.store = other(bucket)

    def head(self) -> ObjectInfo | None:
        """Return the object's size and entity tag, or None."""
        try:
            return self.store.head(self.key)
        except BulkheadError as exc:
            raise _s3_failure(self.index, exc) from None

    def stream(self, start: int = 0, *, etag: str | None = None) -> Iterator[bytes]:
        """Yield the object's bytes from ``start``."""
        try:
            chunks = self.store.get_stream(self.key, (start, None), if_match=etag, chunk_size=_CHUNK)
        except BulkheadError as exc:
            raise _s3_failure(self.index, exc) from None
        return self._chunks(chunks)

    def _chunks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from chunks
        except BulkheadError as exc:
            raise _s3_failure(self.index, exc) from None

    def object_keys(self) -> list[str]:
        """Return the keys of the objects under this source's key, a prefix ending in ``/`` (sorted)."""
        found: list[str] = []
        try:
            for key in self.store.list_keys(self.key):
                if key.endswith("/"):
                    continue
                found.append(key)
                if len(found) > MAX_PREFIX_OBJECTS:
                    raise InputUnreadable(
                        f"input {self.index} could not be read: more than {MAX_PREFIX_OBJECTS} objects "
                        "under its prefix",
                        reason="too many objects",
                    )
        except InputUnreadable:
            raise
        except BulkheadError as exc:
            raise _s3_failure(self.index, exc) from None
        return sorted(found)


class HttpSource:
    """A file served over HTTP(S), fetched on a session that obeys the input policy."""

    def __init__(self, url: str, index: int, session: requests.Session, *, basic: str | None = None) -> None:
        self.url = url
        self.index = index
        self.session = session
        self.headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if basic:
            self.headers["Authorization"] = "Basic " + base64.b64encode(basic.encode("utf-8")).decode("ascii")

    def _fail(self, response: requests.Response) -> BulkheadError:
        code = response.status_code
        if code in (404, 410):
            return unreadable(self.index, NOT_FOUND)
        if code == 412:
            return changed(self.index)
        if code == 429 or code >= 500:
            return unreachable(self.index)
        return unreadable(self.index, NOT_ALLOWED)

    def _checked(self, response: requests.Response) -> requests.Response:
        kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind in _LISTINGS:
            response.close()
            raise unreadable(self.index, NOT_NDJSON)
        return response

    def _request(self, method: str, headers: dict[str, str], **options: Any) -> requests.Response:
        """Send one request: a refused address or redirect is "not allowed", another failure "unreachable"."""
        try:
            return self.session.request(method, self.url, headers=headers, timeout=_TIMEOUT, **options)
        except (AddressRefused, requests.TooManyRedirects):
            raise unreadable(self.index, NOT_ALLOWED) from None
        except (requests.RequestException, ValueError):
            raise unreachable(self.index) from None

    def _get(self, headers: dict[str, str]) -> requests.Response:
        return self._request("GET", headers, stream=True)

    def head(self) -> ObjectInfo | None:
        """Return the size and entity tag (from HEAD, or a one-byte GET), or None when it is missing."""
        resp = self._request("HEAD", self.headers, allow_redirects=True)
        if resp.status_code in (404, 410):
            return None
        length = resp.headers.get("Content-Length")
        if resp.status_code == 200 and length is not None and length.isdigit():
            self._checked(resp)
            return ObjectInfo(self.url, int(length), _etag(resp.headers.get("ETag")))
        with self._get({**self.headers, "Range": "bytes=0-0"}) as probe:
            if probe.status_code in (404, 410):
                return None
            self._checked(probe)
            if probe.status_code == 206 and "/" in probe.headers.get("Content-Range", ""):
                total = probe.headers["Content-Range"].rpartition("/")[2]
                if total.isdigit():
                    return ObjectInfo(self.url, int(total), _etag(probe.headers.get("ETag")))
            if probe.status_code == 200:
                try:
                    size = sum(len(c) for c in probe.raw.stream(_CHUNK, decode_content=False))
                except Exception:
                    raise unreachable(self.index) from None
                return ObjectInfo(self.url, size, _etag(probe.headers.get("ETag")))
            raise self._fail(probe)

    def stream(self, start: int = 0, *, etag: str | None = None) -> Iterator[bytes]:
        """Yield the file's bytes from ``start``."""
        headers = dict(self.headers)
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        if etag:
            headers["If-Match"] = f'"{etag}"'
        resp = self._get(headers)
        if resp.status_code == 416:
            resp.close()
            return iter(())
        if resp.status_code not in (200, 206):
            resp.close()
            raise self._fail(resp)
        self._checked(resp)
        served = _etag(resp.headers.get("ETag"))
        if etag and served and served != etag:
            resp.close()
            raise changed(self.index)
        skip = start if resp.status_code == 200 else 0
        return self._chunks(resp, skip)

    def _chunks(self, resp: requests.Response, skip: int) -> Iterator[bytes]:
        try:
            for piece in resp.raw.stream(_CHUNK, decode_content=False):
                if skip:
                    if len(piece) <= skip:
                        skip -= len(piece)
                        continue
                    yield piece[skip:]
                    skip = 0
                    continue
                yield piece
        except requests.RequestException:
            raise unreachable(self.index) from None
        except Exception as exc:
            if type(exc).__module__.startswith("urllib3") or isinstance(exc, OSError):
                raise unreachable(self.index) from None
            raise
        finally:
            resp.close()


def _etag(value: str | None) -> str:
    return (value or "").removeprefix("W/").strip('"')


def check_input(policy: InputPolicy, index: int, url: str, partition: str) -> None:
    """Refuse an input the policy does not allow into ``partition`` (``input N could not be read: ...``)."""
    scheme, bucket, key = parse_input_url(url)
    if scheme == "s3":
        policy.check_s3(index, bucket, key, partition)
    else:
        policy.check_http(index, url)


def open_source(
    policy: InputPolicy,
    index: int,
    url: str,
    store: ObjectStore,
    partition: str,
    *,
    basic: str | None = None,
    session: requests.Session | None = None,
) -> ImportSource:
    """Return the source of input ``index`` at ``url``, after the policy's check."""
    check_input(policy, index, url, partition)
    scheme, bucket, key = parse_input_url(url)
    if scheme == "s3":
        return S3Source(url, index, store, bucket, key)
    return HttpSource(url, index, session or policy_session(policy), basic=basic)


def prefix_objects(
    policy: InputPolicy, index: int, url: str, store: ObjectStore, partition: str
) -> list[str]:
    """Return the ``s3://`` URLs of the objects under an ``s3://bucket/prefix/`` input (within the policy)."""
    source = open_source(policy, index, url, store, partition)
    assert isinstance(source, S3Source)
    bucket = parse_input_url(url)[1]
    urls = [f"s3://{bucket}/{key}" for key in source.object_keys()]
    for object_url in urls:
        check_input(policy, index, object_url, partition)
    log.info("input %s (%s): %s objects under the prefix", index, display_url(url), len(urls))
    return urls


def is_prefix(url: str) -> bool:
    """Return True when ``url`` names every object under an S3 prefix (``s3://bucket/prefix/``)."""
    return url.startswith("s3://") and url.endswith("/")


__all__ = [
    "MAX_PREFIX_OBJECTS",
    "HttpSource",
    "ImportSource",
    "S3Source",
    "check_input",
    "is_prefix",
    "open_source",
    "prefix_objects",
]
