"""Where import files come from: an S3 object (``s3://bucket/key``) or an HTTP(S) URL.

Both sit behind one small Protocol, ``ImportSource``: ``head()`` for the size and entity tag, ``stream()`` for
the bytes from an offset, refusing a file whose entity tag changed. Errors are Bulkhead's own: a missing file
is NotFound, a changed one PreconditionFailed, an unreachable server ServiceUnavailable (retried).

HTTP reads ask for ``Range: bytes=start-``; a server that ignores it (200 instead of 206) still works, the
skipped bytes are read and dropped. Bytes are read as sent (``Content-Encoding: gzip`` is not undone here):
the reader recognises gzip by its magic bytes.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Protocol

import requests

from core.errors import BulkheadError, Forbidden, NotFound, PreconditionFailed, ServiceUnavailable
from core.importspec import parse_input_url
from storage.objectstore.base import ObjectInfo, ObjectStore, job_prefix

log = logging.getLogger(__name__)
_CHUNK = 1024 * 1024
_TIMEOUT = (10, 120)


class ImportSource(Protocol):
    """One input file."""

    url: str

    def head(self) -> ObjectInfo | None:
        """Return the file's size and entity tag, or None when there is no such file."""
        ...

    def stream(self, start: int = 0, *, etag: str | None = None) -> Iterator[bytes]:
        """Yield the bytes from ``start``; raise PreconditionFailed if the entity tag is not ``etag``."""
        ...


class S3Source:
    """An object of the S3 server Bulkhead uses (any bucket its credentials reach)."""

    def __init__(self, url: str, store: ObjectStore, bucket: str, key: str):
        self.url = url
        self.key = key
        self.store = store
        if bucket != store.bucket:
            other = getattr(store, "with_bucket", None)
            if other is None:
                raise NotFound(f"No bucket {bucket!r} in this object store")
            self.store = other(bucket)

    def head(self) -> ObjectInfo | None:
        """Return the object's size and entity tag, or None."""
        return self.store.head(self.key)

    def stream(self, start: int = 0, *, etag: str | None = None) -> Iterator[bytes]:
        """Yield the object's bytes from ``start``."""
        return self.store.get_stream(self.key, (start, None), if_match=etag, chunk_size=_CHUNK)


class HttpSource:
    """A file served over HTTP(S)."""

    def __init__(self, url: str, *, basic: str | None = None, session: requests.Session | None = None):
        self.url = url
        self.session = session or requests.Session()
        self.headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if basic:
            self.headers["Authorization"] = "Basic " + base64.b64encode(basic.encode("utf-8")).decode("ascii")

    def _fail(self, response: requests.Response) -> BulkheadError:
        code = response.status_code
        if code in (404, 410):
            return NotFound(f"No file at {self.url} (HTTP {code})")
        if code in (401, 403):
            return Forbidden(f"{self.url} refused access (HTTP {code})")
        if code == 412:
            return PreconditionFailed(f"{self.url} changed since its entity tag was taken")
        if code == 429 or code >= 500:
            return ServiceUnavailable(f"{self.url} answered HTTP {code}", retry_after=5)
        return BulkheadError(f"{self.url} answered HTTP {code}")

    def head(self) -> ObjectInfo | None:
        """Return the size and entity tag (from HEAD, or a one-byte GET), or None when it is missing."""
        try:
            resp = self.session.head(self.url, headers=self.headers, timeout=_TIMEOUT, allow_redirects=True)
            if resp.status_code in (404, 410):
                return None
            length = resp.headers.get("Content-Length")
            if resp.status_code == 200 and length is not None:
                return ObjectInfo(self.url, int(length), _etag(resp.headers.get("ETag")))
            probe = self.session.get(
                self.url, headers={**self.headers, "Range": "bytes=0-0"}, timeout=_TIMEOUT, stream=True
            )
            with probe:
                if probe.status_code in (404, 410):
                    return None
                if probe.status_code == 206 and "/" in probe.headers.get("Content-Range", ""):
                    total = probe.headers["Content-Range"].rpartition("/")[2]
                    if total.isdigit():
                        return ObjectInfo(self.url, int(total), _etag(probe.headers.get("ETag")))
                if probe.status_code == 200:
                    size = sum(len(c) for c in probe.raw.stream(_CHUNK, decode_content=False))
                    return ObjectInfo(self.url, size, _etag(probe.headers.get("ETag")))
                raise self._fail(probe)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"{self.url} is not reachable: {exc}", retry_after=5) from exc

    def stream(self, start: int = 0, *, etag: str | None = None) -> Iterator[bytes]:
        """Yield the file's bytes from ``start``."""
        headers = dict(self.headers)
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        if etag:
            headers["If-Match"] = f'"{etag}"'
        try:
            resp = self.session.get(self.url, headers=headers, timeout=_TIMEOUT, stream=True)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"{self.url} is not reachable: {exc}", retry_after=5) from exc
        if resp.status_code == 416:
            resp.close()
            return iter(())
        if resp.status_code not in (200, 206):
            resp.close()
            raise self._fail(resp)
        served = _etag(resp.headers.get("ETag"))
        if etag and served and served != etag:
            resp.close()
            raise PreconditionFailed(f"{self.url} changed since its entity tag was taken")
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
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"Reading {self.url} failed: {exc}", retry_after=5) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("urllib3"):
                raise ServiceUnavailable(f"Reading {self.url} failed: {exc}", retry_after=5) from exc
            raise
        finally:
            resp.close()


def _etag(value: str | None) -> str:
    return (value or "").removeprefix("W/").strip('"')


def open_source(url: str, store: ObjectStore, *, basic: str | None = None) -> ImportSource:
    """Return the source of an input URL."""
    scheme, bucket, key = parse_input_url(url)
    if scheme == "s3":
        return S3Source(url, store, bucket, key)
    return HttpSource(url, basic=basic)


def check_input_allowed(url: str, store: ObjectStore, prefix: str, partition: str) -> None:
    """Refuse an input in Bulkhead's own bucket outside the partition's own prefix (other tenants' files)."""
    scheme, bucket, key = parse_input_url(url)
    if scheme != "s3" or bucket != store.bucket:
        return
    own = job_prefix(prefix, partition, "x").rsplit("/", 2)[0] + "/"
    if not key.startswith(own):
        raise Forbidden(
            f"Input {url} is in Bulkhead's own bucket outside this partition's prefix {own}; "
            "upload inputs under it (bulkhead import does) or use another bucket"
        )
