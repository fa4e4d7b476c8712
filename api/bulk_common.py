"""The asynchronous contract every bulk operation shares (Bulk Data STU2 kick-off and polling).

- kick-off: ``202 Accepted`` with an absolute ``Content-Location`` under the base of the partition that
  started the job (``{base}/_operations/{kind}/{id}``), and an informational OperationOutcome;
- polling: ``202`` with ``X-Progress`` and ``Retry-After`` (seconds) while the job runs, ``200`` with the
  operation's JSON result when it completed, the job's OperationOutcome with its status when it failed;
- files: streamed through the API (``application/fhir+ndjson``, gzip when the client accepts it);
- ownership: a job belongs to the client whose token started it (``job_caller``); only that client, or an
  administrator, polls, downloads, cancels or lists it. Everyone else gets the 404 of an unknown id.

Used by the ``$export`` blueprint and by ``$import``, ``$reindex``, bulk update and bulk delete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from flask import Response, current_app, request

from api.errors import FHIR_JSON
from api.http import base_url, fhir_response
from api.security.auth import current_principal
from core.deflate import gzip_chunks
from core.errors import Issue, NotFound, Unauthorized
from core.fhirjson import dumps
from core.jobs import ACTIVE_STATUSES, ANONYMOUS, JobCaller, JobStatus, JobStatusView
from core.outcome import operation_outcome
from core.settings import Settings
from storage import Database
from storage.objectstore import ObjectStore, object_store_from_settings

NDJSON = "application/fhir+ndjson"
RETRY_AFTER_SECONDS = 2


def db() -> Database:
    """Return the application's database."""
    database: Database = current_app.extensions["bulkhead.db"]
    return database


def settings() -> Settings:
    """Return the application's settings."""
    value: Settings = current_app.config["BULKHEAD_SETTINGS"]
    return value


def store() -> ObjectStore:
    """Return the application's object store (built once from the settings)."""
    found: ObjectStore | None = current_app.extensions.get("bulkhead.objectstore")
    if found is None:
        found = object_store_from_settings(settings())
        current_app.extensions["bulkhead.objectstore"] = found
    return found


def job_caller() -> JobCaller:
    """Return on whose behalf this request submits and looks up jobs: the token's client (an administrator
    sees every client's jobs), or the anonymous client when authentication is off."""
    principal = current_principal()
    if principal is None:
        if settings().auth_enabled:
            raise Unauthorized("This server requires a bearer token")
        return ANONYMOUS
    return JobCaller(principal.subject, every_client=principal.admin)


def own_path(partition: str) -> str:
    """Return the request path below the partition's base (``/$export``, ``/Patient/$bulk-update``...)."""
    path = request.path
    prefix = f"/partitions/{partition}"
    return path[len(prefix) :] if path.startswith(prefix + "/") else path


def request_url(partition: str) -> str:
    """Return the absolute URL of this request as the client sent it, under the partition's base."""
    query = request.query_string.decode("latin-1")
    return f"{base_url(partition)}{own_path(partition)}" + (f"?{query}" if query else "")


def job_location(partition: str, kind: str, job_id: str) -> str:
    """Return the absolute status URL of a job, under the base of the partition it belongs to."""
    return f"{base_url(partition)}/_operations/{kind}/{job_id}"


def accepted(partition: str, kind: str, job_id: str, what: str) -> Response:
    """Return the kick-off answer: 202, ``Content-Location`` and an informational OperationOutcome."""
    location = job_location(partition, kind, job_id)
    body = operation_outcome(
        [Issue(f"{what} accepted; poll {location}", code="informational", severity="information")]
    )
    return fhir_response(body, 202, {"Content-Location": location})


def http_date(value: datetime) -> str:
    """Format a datetime for an HTTP header."""
    return format_datetime(value.astimezone(UTC), usegmt=True)


def expires(expires_at: datetime | None, ended_at: datetime | None) -> datetime:
    """Return when a finished job's results expire."""
    if expires_at is not None:
        return expires_at
    return (ended_at or datetime.now(UTC)) + timedelta(hours=settings().job_expiry_hours)


def in_progress(progress_text: str) -> Response:
    """Return the answer to a poll of a running job: 202, empty, with X-Progress and Retry-After."""
    headers = {"X-Progress": progress_text[:99], "Retry-After": str(RETRY_AFTER_SECONDS)}
    response = Response(b"", status=202, headers=headers)
    del response.headers["Content-Type"]  # no body: not Flask's default text/html
    return response


def status_response(
    view: JobStatusView, what: str, result: Callable[[dict[str, Any]], dict[str, Any]]
) -> Response:
    """Answer a poll: 202 while running, 200 with ``result(view.result)``, or the failure's outcome."""
    if view.state in ACTIVE_STATUSES:
        return in_progress(view.progress_text)
    if view.state == JobStatus.COMPLETED:
        headers = {"Expires": http_date(expires(view.expires_at, view.ended_at))}
        return Response(dumps(result(view.result or {})), 200, headers, content_type="application/json")
    if view.state == JobStatus.FAILED:
        error = view.error or operation_outcome([Issue(f"The {what} failed", code="exception")])
        return Response(dumps(error), status=view.http_status, content_type=FHIR_JSON)
    raise NotFound(f"{what} {view.id} is not known")


def accepts_gzip() -> bool:
    """Return whether the client accepts a gzip-encoded body."""
    for item in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            return "q=0" not in params.replace(" ", "") or "q=0." in params
    return False


def gzip_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Compress a byte stream as gzip, chunk by chunk."""
    return gzip_chunks(chunks)


def file_response(key: str, size: int | None) -> Response:
    """Stream one NDJSON object of a job (gzip when the client accepts it)."""
    chunks = store().get_stream(key)
    headers = {"Vary": "Accept-Encoding", "Cache-Control": "private, no-store"}
    if accepts_gzip():
        headers["Content-Encoding"] = "gzip"
        return Response(gzip_stream(iter(chunks)), 200, headers, content_type=NDJSON, direct_passthrough=True)
    if size is not None:
        headers["Content-Length"] = str(size)
    return Response(iter(chunks), 200, headers, content_type=NDJSON, direct_passthrough=True)
