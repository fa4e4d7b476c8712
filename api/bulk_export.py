"""The ``$export`` blueprint (FHIR Bulk Data STU2): kick-off, status, cancel, file download, job listing.

Registered at the root (partition ``default``) and under ``/partitions/<partition>``. Every job URL lives
under the base of the partition that started the job, and every lookup filters by that partition and by the
client that started it: a job of partition A is a 404 from partition B, and a job of client X is a 404 for
client Y of the same partition (status, DELETE, files and listing alike), unless Y is an administrator.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, request

from api.bulk_common import accepts_gzip as _accepts_gzip
from api.bulk_common import db as _db
from api.bulk_common import gzip_stream as _gzip
from api.bulk_common import http_date as _http_date
from api.bulk_common import in_progress as _in_progress
from api.bulk_common import job_caller as _caller
from api.bulk_common import own_path as _own_path
from api.bulk_common import settings as _settings
from api.bulk_common import store as _store
from api.errors import FHIR_JSON
from api.http import base_url, fhir_response
from api.security.quotas import partition_limits
from api.typed import current_request
from core.errors import InvalidRequest, Issue, NotFound
from core.fhirdates import format_instant
from core.fhirjson import dumps
from core.outcome import operation_outcome
from core.settings import Settings
from orchestrator import export_service as jobs_api
from orchestrator.export import KIND, resolve_patients
from orchestrator.export_service import ACTIVE, ExportStatus
from storage.export.compression import GZIP, inflate

log = logging.getLogger(__name__)
bp = Blueprint("bulk_export", __name__)
NDJSON = "application/fhir+ndjson"
_STATUS = "/_operations/export/<job:job_id>"


def _max_jobs(partition: str) -> int:
    """Return the partition's concurrent bulk job limit (per-partition config over the settings' default)."""
    limit = partition_limits(partition).max_concurrent_jobs
    return limit if limit is not None else _settings().export_max_concurrent_per_partition


def _kick_off(partition: str) -> Response:
    spec = current_request().export
    assert spec is not None
    spec = resolve_patients(_db(), partition, spec)
    query = request.query_string.decode("latin-1")
    request_url = f"{base_url(partition)}{_own_path(partition)}" + (f"?{query}" if query else "")
    now = datetime.now(UTC)
    definition = {"spec": spec.to_json(), "transaction_time": format_instant(now)}
    job_id = jobs_api.submit(
        _db(),
        partition,
        KIND,
        definition,
        caller=_caller(),
        settings=_settings(),
        request_url=request_url,
        transaction_time=now,
        max_concurrent=_max_jobs(partition),
    )
    location = f"{base_url(partition)}/_operations/export/{job_id}"
    log.info("export %s accepted in %s", job_id, partition, extra={"partition": partition, "job_id": job_id})
    body = operation_outcome(
        [Issue(f"Export accepted; poll {location}", code="informational", severity="information")]
    )
    return fhir_response(body, 202, {"Content-Location": location})


@bp.route("/$export", methods=["GET", "POST"])
def export_system(partition: str) -> Response:
    """Kick off a system-level export of the partition."""
    return _kick_off(partition)


@bp.route("/Patient/$export", methods=["GET", "POST"])
def export_patients(partition: str) -> Response:
    """Kick off a Patient-level export (the Patient compartment of every patient, or of ``patient``)."""
    return _kick_off(partition)


@bp.route("/Group/<group_id>/$export", methods=["GET", "POST"])
def export_group(partition: str, group_id: str) -> Response:
    """Kick off a Group-level export (the Patient compartments of the Group's members)."""
    return _kick_off(partition)


def _file_url(partition: str, job_id: str, entry: dict[str, Any], presign: int | None) -> str:
    if presign is not None:
        return _store().presign_get(str(entry["key"]), presign, content_type=NDJSON)
    return f"{base_url(partition)}/_operations/export/{job_id}/{entry['file']}"


def _requires_token(settings: Settings) -> bool:
    return settings.auth_enabled and not settings.presigned_urls


def _expires(view: ExportStatus) -> datetime:
    if view.expires_at is not None:
        return view.expires_at
    return (view.ended_at or datetime.now(UTC)) + timedelta(hours=_settings().job_expiry_hours)


def manifest(partition: str, job_id: str, view: ExportStatus) -> dict[str, Any]:
    """Build the STU2 complete-status manifest of a finished export."""
    result: dict[str, Any] = view.result or {}
    settings = _settings()
    presign = None
    if settings.presigned_urls:
        seconds = (_expires(view) - datetime.now(UTC)).total_seconds()
        presign = max(60, min(int(seconds), 7 * 24 * 3600))

    def items(key: str) -> list[dict[str, Any]]:
        return [
            {"type": e["type"], "url": _file_url(partition, job_id, e, presign), "count": e["count"]}
            for e in result.get(key, [])
        ]

    body: dict[str, Any] = {
        "transactionTime": result.get("transactionTime"),
        "request": view.request_url,
        "requiresAccessToken": _requires_token(settings),
        "output": items("output"),
        "error": items("error"),
    }
    if result.get("since") is not None:
        body["deleted"] = items("deleted")
    return body


@bp.get(_STATUS)
def status(partition: str, job_id: str) -> Response:
    """Report an export: 202 while it runs, 200 with the manifest, 4xx/5xx with an OperationOutcome."""
    view = jobs_api.status(_db(), partition, job_id, caller=_caller(), kind=KIND)
    if view.state in ACTIVE:
        return _in_progress(view.progress_text)
    if view.state == "completed":
        headers = {"Expires": _http_date(_expires(view))}
        return Response(
            dumps(manifest(partition, job_id, view)), 200, headers, content_type="application/json"
        )
    if view.state == "failed":
        error = view.error or operation_outcome([Issue("The export failed", code="exception")])
        return Response(dumps(error), status=view.http_status, content_type=FHIR_JSON)
    raise NotFound(f"Export {job_id} is not known")


@bp.delete(_STATUS)
def cancel(partition: str, job_id: str) -> Response:
    """Cancel a running export, or release a finished one (its files are deleted); later polls are 404."""
    caller = _caller()
    running = jobs_api.status(_db(), partition, job_id, caller=caller, kind=KIND).state in ACTIVE
    jobs_api.cancel(_db(), partition, job_id, caller=caller, kind=KIND, settings=_settings())
    _store().delete_prefix(_store().job_prefix(partition, job_id))
    body = operation_outcome(
        [
            Issue(
                f"Export {job_id} {'cancelled' if running else 'released'}; its files are deleted",
                code="informational",
                severity="information",
            )
        ]
    )
    return fhir_response(body, 202)


@bp.get(f"{_STATUS}/<name>")
def download(partition: str, job_id: str, name: str) -> Response:
    """Stream one output file of a completed export of this partition (gzip when the client accepts it)."""
    view = jobs_api.status(_db(), partition, job_id, caller=_caller(), kind=KIND)
    if view.state != "completed":
        raise NotFound(f"Export {job_id} has no file {name!r}")
    result: dict[str, Any] = view.result or {}
    entries = [e for key in ("output", "deleted", "error") for e in result.get(key, [])]
    entry = next((e for e in entries if e["file"] == name), None)
    if entry is None:
        raise NotFound(f"Export {job_id} has no file {name!r}")
    chunks = iter(_store().get_stream(str(entry["key"])))
    stored_gzip = entry.get("encoding") == GZIP
    headers = {"Vary": "Accept-Encoding", "Cache-Control": "private, no-store"}
    if _accepts_gzip():
        headers["Content-Encoding"] = "gzip"
        body = chunks if stored_gzip else _gzip(chunks)
        return Response(body, 200, headers, content_type=NDJSON, direct_passthrough=True)
    headers["Content-Length"] = str(entry["size"])
    body = inflate(chunks) if stored_gzip else chunks
    return Response(body, 200, headers, content_type=NDJSON, direct_passthrough=True)


@bp.get("/_operations")
def list_operations(partition: str) -> Response:
    """List the caller's bulk jobs of this partition (an administrator's: everyone's), optionally filtered by
    ``kind`` and ``status``."""
    kind = request.args.get("kind")
    state = request.args.get("status")
    allowed = {"queued", "planning", "running", "completed", "failed", "cancelled"}
    if state is not None and state not in allowed:
        raise InvalidRequest(f"status must be one of {', '.join(sorted(allowed))}")
    jobs = jobs_api.list_jobs(_db(), partition, caller=_caller(), kind=kind, status=state)
    base = base_url(partition)
    params = []
    for job in jobs:
        parts: list[dict[str, Any]] = [
            {"name": "id", "valueString": job.id},
            {"name": "kind", "valueCode": job.kind},
            {"name": "status", "valueCode": job.status},
            {"name": "location", "valueUrl": f"{base}/_operations/{job.kind}/{job.id}"},
        ]
        if job.created_at is not None:
            parts.append({"name": "created", "valueInstant": format_instant(job.created_at)})
        if job.request_url:
            parts.append({"name": "request", "valueUrl": job.request_url})
        params.append({"name": "job", "part": parts})
    return fhir_response({"resourceType": "Parameters", "parameter": params})
