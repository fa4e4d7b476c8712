"""A Bulk Data client: kick off an export, follow its progress, download and check its files.

Used by ``bulkhead export``; talks plain HTTP (requests) to any FHIR server that implements $export.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from tqdm import tqdm

from cli.clients.http import jittered, retrying_session

_FRACTION = re.compile(r"(\d+)\s*(?:/|of)\s*(\d+)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


class ExportFailed(Exception):
    """The export could not be started, failed on the server, or a file did not check out."""


@dataclass
class ExportRequest:
    """What to export and where to put it."""

    base: str
    out: Path
    types: list[str] = field(default_factory=list)
    since: str | None = None
    patients: list[str] = field(default_factory=list)
    group: str | None = None
    type_filters: list[str] = field(default_factory=list)
    token: str | None = None
    poll_max_seconds: float = 30.0
    timeout: float = 60.0


def _outcome_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in body.get("issue", []))
    return str(body)[:500]


def progress_fraction(text: str) -> float | None:
    """Return the fraction done an X-Progress header states ("3/10", "3 of 10 parts", "30%"), if any."""
    m = _FRACTION.search(text)
    if m and int(m.group(2)) > 0:
        return min(1.0, int(m.group(1)) / int(m.group(2)))
    m = _PERCENT.search(text)
    if m:
        return min(1.0, float(m.group(1)) / 100)
    return None


class BulkExportClient:
    """Run one export against a FHIR base URL."""

    def __init__(self, req: ExportRequest, session: requests.Session | None = None):
        self.req = req
        self.session = session or retrying_session()
        self.base = req.base.rstrip("/")
        self.headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        if req.token:
            self.headers["Authorization"] = f"Bearer {req.token}"

    def kick_off(self) -> str:
        """Start the export and return its status URL."""
        req = self.req
        if req.group:
            url = f"{self.base}/Group/{req.group}/$export"
        elif req.patients:
            url = f"{self.base}/Patient/$export"
        else:
            url = f"{self.base}/$export"
        params: list[tuple[str, str]] = []
        if req.types:
            params.append(("_type", ",".join(req.types)))
        if req.since:
            params.append(("_since", req.since))
        params += [("_typeFilter", f) for f in req.type_filters]
        if req.patients:
            body = {
                "resourceType": "Parameters",
                "parameter": [{"name": n, "valueString": v} for n, v in params]
                + [
                    {"name": "patient", "valueReference": {"reference": _patient_ref(p)}}
                    for p in req.patients
                ],
            }
            headers = {**self.headers, "Content-Type": "application/fhir+json"}
            response = self.session.post(url, json=body, headers=headers, timeout=req.timeout)
        else:
            response = self.session.get(url, params=params, headers=self.headers, timeout=req.timeout)
        if response.status_code != 202 or "Content-Location" not in response.headers:
            raise ExportFailed(f"kick-off refused ({response.status_code}): {_outcome_text(response)}")
        return response.headers["Content-Location"]

    def wait(self, status_url: str, on_progress: Callable[[str], None]) -> dict[str, Any]:
        """Poll until the export completes; return its manifest."""
        delay = 1.0
        while True:
            response = self.session.get(
                status_url, headers={**self.headers, "Accept": "application/json"}, timeout=self.req.timeout
            )
            if response.status_code == 200:
                manifest: dict[str, Any] = response.json()
                return manifest
            if response.status_code == 202:
                on_progress(response.headers.get("X-Progress", ""))
                retry = response.headers.get("Retry-After", "")
                delay = float(retry) if retry.isdigit() else min(delay * 1.5, self.req.poll_max_seconds)
                time.sleep(jittered(min(max(delay, 0.2), self.req.poll_max_seconds)))
                continue
            if response.status_code == 429:
                retry = response.headers.get("Retry-After", "")
                time.sleep(jittered(float(retry) if retry.isdigit() else 5.0))
                continue
            raise ExportFailed(f"export failed ({response.status_code}): {_outcome_text(response)}")

    def download(self, item: dict[str, Any], requires_token: bool) -> tuple[Path, int]:
        """Download one manifest file into the output directory; return its path and line count."""
        url = str(item["url"])
        name = Path(urlsplit(url).path).name or "file.ndjson"
        target = self.req.out / name
        headers = {"Accept-Encoding": "gzip"}
        if requires_token and "Authorization" in self.headers:
            headers["Authorization"] = self.headers["Authorization"]
        lines = 0
        with self.session.get(url, headers=headers, stream=True, timeout=self.req.timeout) as response:
            if response.status_code != 200:
                raise ExportFailed(f"download of {url} failed ({response.status_code})")
            with target.open("wb") as fh:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    fh.write(chunk)
                    lines += chunk.count(b"\n")
        return target, lines

    def run(self, *, show_progress: bool = True) -> dict[str, Any]:
        """Kick off, wait, download and check every file; return the manifest."""
        self.req.out.mkdir(parents=True, exist_ok=True)
        status_url = self.kick_off()
        with tqdm(total=100, desc="export", unit="%", disable=not show_progress) as bar:

            def on_progress(text: str) -> None:
                fraction = progress_fraction(text)
                if fraction is not None:
                    bar.n = round(fraction * 100)
                bar.set_postfix_str(text[:60])
                bar.refresh()

            manifest = self.wait(status_url, on_progress)
            bar.n = 100
            bar.set_postfix_str("complete")
            bar.refresh()
        requires_token = bool(manifest.get("requiresAccessToken"))
        items = [*manifest.get("output", []), *manifest.get("deleted", []), *manifest.get("error", [])]
        problems: list[str] = []
        for item in tqdm(items, desc="download", unit="file", disable=not show_progress):
            path, lines = self.download(item, requires_token)
            expected = item.get("count")
            if expected is not None and int(expected) != lines:
                problems.append(f"{path.name}: {lines} lines, the manifest says {expected}")
        if problems:
            raise ExportFailed("; ".join(problems))
        return manifest


def _patient_ref(value: str) -> str:
    return value if "/" in value else f"Patient/{value}"
