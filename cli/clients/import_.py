"""The ``bulkhead import`` client: upload local files if needed, kick off ``$import``, follow it, report.

Local files go to the object store Bulkhead uses (the ``BULKHEAD_S3_*`` settings) under the partition's own
prefix, ``{prefix}/{partition}/uploads/{sha256}/{name}`` — the only place in Bulkhead's bucket an import of
that partition may read — and are named as ``s3://`` inputs; ``s3://`` and ``http(s)://`` arguments are
passed as they are.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from tqdm import tqdm

from cli.clients.export import progress_fraction
from cli.clients.http import jittered, retrying_session
from cli.serve.runtime_file import with_running_serve
from core.errors import BulkheadError
from core.partition import DEFAULT_PARTITION, validate_partition_name
from core.settings import Settings
from storage.objectstore import ObjectStore, object_store_from_settings

_CHUNK = 8 * 1024 * 1024


class ImportFailed(Exception):
    """The import could not be started, or failed."""


@dataclass
class ImportRequest:
    """What ``bulkhead import`` was asked to do."""

    base: str
    sources: list[str]
    mode: str = "IncrementalLoad"
    validation: str = "full"
    resource_type: str | None = None
    input_source: str | None = None
    range_bytes: int | None = None
    token: str | None = None
    timeout: float = 60.0
    poll_max_seconds: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)


def partition_of(base: str) -> str:
    """Return the partition a FHIR base URL names (``…/partitions/{name}``, else ``default``)."""
    parts = [p for p in urlsplit(base).path.split("/") if p]
    if "partitions" in parts:
        i = parts.index("partitions")
        if i + 1 < len(parts):
            return validate_partition_name(parts[i + 1])
    return DEFAULT_PARTITION


def upload(path: Path, store: ObjectStore, partition: str) -> str:
    """Upload a local file under the partition's upload prefix (once per content); return its s3:// URL."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    head = store.job_prefix(partition, "uploads")  # {prefix}/{partition}/uploads/
    key = f"{head}{digest.hexdigest()[:32]}/{path.name}"
    if store.head(key) is None:
        with path.open("rb") as f, store.open_writer(key) as writer:
            for block in iter(lambda: f.read(_CHUNK), b""):
                writer.write(block)
    return f"s3://{store.bucket}/{key}"


def _outcome(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in body.get("issue", []))
    return str(body)[:500]


class BulkImportClient:
    """Run one import against a FHIR base URL."""

    def __init__(self, req: ImportRequest, session: requests.Session | None = None):
        self.req = req
        self.session = session or retrying_session()
        self.base = req.base.rstrip("/")
        self.headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        if req.token:
            self.headers["Authorization"] = f"Bearer {req.token}"

    def inputs(self, settings: Settings | None = None) -> list[str]:
        """Return the input URLs, uploading local files first."""
        urls: list[str] = []
        store: ObjectStore | None = None
        for source in self.req.sources:
            if urlsplit(source).scheme in {"s3", "http", "https"}:
                urls.append(source)
                continue
            path = Path(source)
            if not path.is_file():
                raise ImportFailed(f"{source} is neither a file nor an s3:// or http(s):// URL")
            if store is None:
                config = settings or with_running_serve(Settings.from_env())
                if not config.s3_endpoint_url:
                    raise ImportFailed(
                        f"{source} is a local file: it is uploaded to the object store first, and none is "
                        "configured here (run the command in the directory of the running 'bulkhead serve', "
                        "set BULKHEAD_S3_ENDPOINT_URL and its keys, or give an s3:// or http(s):// URL)"
                    )
                store = object_store_from_settings(config)
            try:
                urls.append(upload(path, store, partition_of(self.base)))
            except BulkheadError as exc:
                raise ImportFailed(f"uploading {source} failed: {exc}") from exc
        return urls

    def body(self, urls: list[str]) -> dict[str, Any]:
        """Return the $import Parameters body."""
        params: list[dict[str, Any]] = [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "mode", "valueCode": self.req.mode},
            {"name": "validation", "valueCode": self.req.validation},
        ]
        if self.req.input_source:
            params.append({"name": "inputSource", "valueUri": self.req.input_source})
        if self.req.range_bytes:
            params.append({"name": "processingUnitBytesToRead", "valueInteger": self.req.range_bytes})
        for url in urls:
            parts: list[dict[str, Any]] = [{"name": "url", "valueUrl": url}]
            if self.req.resource_type:
                parts.append({"name": "type", "valueCode": self.req.resource_type})
            params.append({"name": "input", "part": parts})
        return {"resourceType": "Parameters", "parameter": params}

    def kick_off(self, urls: list[str]) -> str:
        """Start the import and return its status URL."""
        response = self.session.post(
            f"{self.base}/$import",
            json=self.body(urls),
            headers={**self.headers, "Content-Type": "application/fhir+json"},
            timeout=self.req.timeout,
        )
        if response.status_code != 202 or "Content-Location" not in response.headers:
            raise ImportFailed(f"kick-off refused ({response.status_code}): {_outcome(response)}")
        return response.headers["Content-Location"]

    def wait(self, status_url: str, on_progress: Callable[[str], None]) -> dict[str, Any]:
        """Poll until the import completes; return its result."""
        while True:
            response = self.session.get(status_url, headers=self.headers, timeout=self.req.timeout)
            if response.status_code == 200:
                result: dict[str, Any] = response.json()
                return result
            if response.status_code in (202, 429):
                if response.status_code == 202:
                    on_progress(response.headers.get("X-Progress", ""))
                retry = response.headers.get("Retry-After", "")
                time.sleep(jittered(min(float(retry) if retry.isdigit() else 1.0, self.req.poll_max_seconds)))
                continue
            raise ImportFailed(f"import failed ({response.status_code}): {_outcome(response)}")

    def run(self, *, show_progress: bool = True) -> dict[str, Any]:
        """Upload, kick off and follow the import (a progress bar fed by X-Progress); return its result."""
        status_url = self.kick_off(self.inputs())
        with tqdm(total=100, desc="import", unit="%", disable=not show_progress) as bar:

            def on_progress(text: str) -> None:
                fraction = progress_fraction(text)
                if fraction is not None:
                    bar.n = round(fraction * 100)
                bar.set_postfix_str(text[:60])
                bar.refresh()

            result = self.wait(status_url, on_progress)
            bar.n = 100
            bar.set_postfix_str("complete")
            bar.refresh()
        return result
