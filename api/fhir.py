"""The FHIR REST blueprint: read, vread, create, update, patch, delete and history, in one partition.

Conditional update, patch and delete (``PUT/PATCH/DELETE [base]/[type]?criteria``) search in the URL's
partition only; see ``services/conditional.py`` for their rules.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from api.http import (
    base_url,
    fhir_response,
    if_match_version,
    json_body,
    not_modified,
    prefer_return,
    resource_response,
    version_headers,
)
from api.typed import current_request
from core.errors import InvalidRequest, Issue
from core.fhirdates import format_instant, parse_instant
from core.outcome import operation_outcome
from core.urlvalues import bounded_int, capped_int
from services import conditional
from services import rest as service
from services.everything import everything_bundle
from services.patching import patch_from_body
from storage import Database, StoredVersion
from storage.search import SearchQuery

bp = Blueprint("fhir", __name__)
RTYPE = "<rtype:rtype>"
RID = "<fhirid:rid>"


def db() -> Database:
    """Return the application's database."""
    database: Database = current_app.extensions["bulkhead.db"]
    return database


def page_size() -> int:
    """Return the _count of this request, bounded by the settings."""
    settings = current_app.config["BULKHEAD_SETTINGS"]
    raw = request.args.get("_count")
    if raw is None:
        return int(settings.default_page_size)
    return capped_int(raw, "_count", int(settings.max_page_size))


@bp.post(f"/{RTYPE}")
def create(partition: str, rtype: str) -> Response:
    """Create a resource; honour If-None-Exist."""
    raw, resource = json_body()
    condition = current_request().search
    if condition is not None:
        result = conditional.conditional_create(
            db(), partition, rtype, raw, resource, condition, base=base_url(partition)
        )
        return resource_response(
            result.stored, 201 if result.created else 200, partition, location=result.created
        )
    result = service.create(db(), partition, rtype, raw, resource)
    return resource_response(result.stored, 201, partition, location=True)


@bp.get(f"/{RTYPE}/{RID}")
def read(partition: str, rtype: str, rid: str) -> Response:
    """Return the current version of a resource."""
    stored = service.read(db(), partition, rtype, rid)
    assert stored.raw is not None
    return not_modified(stored) or fhir_response(stored.raw, 200, version_headers(stored))


@bp.get(f"/{RTYPE}/{RID}/_history/<vid:vid>")
def vread(partition: str, rtype: str, rid: str, vid: int) -> Response:
    """Return one version of a resource."""
    stored = service.vread(db(), partition, rtype, rid, vid)
    assert stored.raw is not None
    return not_modified(stored) or fhir_response(stored.raw, 200, version_headers(stored))


@bp.put(f"/{RTYPE}/{RID}")
def update(partition: str, rtype: str, rid: str) -> Response:
    """Update a resource, or create it with the client's id."""
    raw, resource = json_body()
    keep = current_app.config["BULKHEAD_SETTINGS"].update_keep_identical
    result = service.update(
        db(), partition, rtype, rid, raw, resource, if_match=if_match_version(), keep_identical=keep
    )
    return resource_response(
        result.stored, 201 if result.created else 200, partition, location=result.created
    )


def _criteria() -> SearchQuery:
    """Return the parsed criteria of a conditional interaction (read once with the typed request)."""
    query = current_request().search
    assert query is not None
    return query


@bp.put(f"/{RTYPE}")
def conditional_update(partition: str, rtype: str) -> Response:
    """Update the one resource the criteria match, or create one when none does (several: 412)."""
    raw, resource = json_body()
    query = _criteria()
    result = conditional.conditional_update(
        db(),
        partition,
        rtype,
        raw,
        resource,
        query,
        base=base_url(partition),
        if_match=if_match_version(),
        keep_identical=current_app.config["BULKHEAD_SETTINGS"].update_keep_identical,
    )
    return resource_response(
        result.stored, 201 if result.created else 200, partition, location=result.created
    )


@bp.patch(f"/{RTYPE}/{RID}")
def patch(partition: str, rtype: str, rid: str) -> Response:
    """Apply a FHIRPath Patch (application/fhir+json) or a JSON Patch (application/json-patch+json)."""
    change = patch_from_body(request.mimetype, request.get_data(cache=True))
    result = service.patch(db(), partition, rtype, rid, change, if_match=if_match_version())
    return resource_response(result.stored, 200, partition)


@bp.patch(f"/{RTYPE}")
def conditional_patch(partition: str, rtype: str) -> Response:
    """Patch the one resource the criteria match (none: 404, several: 412)."""
    change = patch_from_body(request.mimetype, request.get_data(cache=True))
    query = _criteria()
    result = conditional.conditional_patch(
        db(), partition, rtype, change, query, base=base_url(partition), if_match=if_match_version()
    )
    return resource_response(result.stored, 200, partition)


def _deleted(deleted: StoredVersion | None, done: str, nothing: str) -> Response:
    headers = version_headers(deleted) if deleted is not None else {}
    if prefer_return() == "OperationOutcome":
        text = done if deleted is not None else nothing
        note = operation_outcome([Issue(text, code="informational", severity="information")])
        return fhir_response(note, 200, headers)
    return Response(b"", status=204, headers=headers)


@bp.delete(f"/{RTYPE}/{RID}")
def delete(partition: str, rtype: str, rid: str) -> Response:
    """Delete a resource (a soft delete: history stays); ETag and Last-Modified name the deletion version."""
    deleted = service.delete(db(), partition, rtype, rid, if_match=if_match_version())
    return _deleted(deleted, f"{rtype}/{rid} deleted", f"{rtype}/{rid} was not there to delete")


@bp.delete(f"/{RTYPE}")
def conditional_delete(partition: str, rtype: str) -> Response:
    """Delete the one resource the criteria match (a soft delete); none: 204 all the same; several: 412."""
    query = _criteria()
    deleted = conditional.conditional_delete(
        db(), partition, rtype, query, base=base_url(partition), if_match=if_match_version()
    )
    done = f"{rtype}/{deleted.resource_id} deleted" if deleted is not None else ""
    return _deleted(deleted, done, f"No {rtype} matched the criteria; nothing was deleted")


def _history_bundle(
    partition: str, versions: list[StoredVersion], total: int, count: int, offset: int, *, paged: bool = True
) -> Any:
    base = base_url(partition)
    entries: list[dict[str, Any]] = []
    for v in versions:
        url = f"{v.resource_type}/{v.resource_id}"
        entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
        if v.deleted:
            entry["request"] = {"method": "DELETE", "url": url}
            entry["response"] = {
                "status": "204 No Content",
                "etag": f'W/"{v.version}"',
                "lastModified": format_instant(v.last_updated),
            }
        else:
            entry["resource"] = "__RAW__"
            method = "POST" if v.version == 1 else "PUT"
            entry["request"] = {"method": method, "url": url if method == "PUT" else v.resource_type}
            entry["response"] = {
                "status": "201 Created" if v.version == 1 else "200 OK",
                "etag": f'W/"{v.version}"',
                "lastModified": format_instant(v.last_updated),
            }
        entries.append(entry)
    self_url = request.url
    links = [{"relation": "self", "url": self_url}]
    if paged and offset + count < total:
        args = request.args.to_dict(flat=True)
        args.update({"_count": str(count), "_offset": str(offset + count)})
        query = "&".join(f"{k}={v}" for k, v in args.items())
        links.append({"relation": "next", "url": f"{request.base_url}?{query}"})
    from services.render import render_bundle

    return render_bundle(
        {"resourceType": "Bundle", "type": "history", "total": total, "link": links},
        entries,
        [v.raw for v in versions],
    )


def _history(partition: str, rtype: str | None, rid: str | None) -> Response:
    since = request.args.get("_since")
    at = request.args.get("_at")
    offset = bounded_int(request.args.get("_offset", "0"), "_offset")
    summary = request.args.get("_summary")
    if summary not in (None, "count", "false"):
        raise InvalidRequest(f"_summary={summary} is not supported on _history (count and false are)")
    count = 0 if summary == "count" else page_size()
    versions, total = service.history(
        db(),
        partition,
        rtype,
        rid,
        since=parse_instant(since) if since else None,
        at=parse_instant(at) if at else None,
        count=count,
        offset=offset,
    )
    bundle = _history_bundle(partition, versions, total, count, offset, paged=summary != "count")
    return fhir_response(bundle)


@bp.get(f"/{RTYPE}/{RID}/_history")
def instance_history(partition: str, rtype: str, rid: str) -> Response:
    """Return the versions of one resource."""
    return _history(partition, rtype, rid)


@bp.get(f"/{RTYPE}/_history")
def type_history(partition: str, rtype: str) -> Response:
    """Return the versions of every resource of a type."""
    return _history(partition, rtype, None)


@bp.get("/_history")
def system_history(partition: str) -> Response:
    """Return the versions of every resource in the partition."""
    return _history(partition, None, None)


@bp.route(f"/Patient/{RID}/$everything", methods=["GET", "POST"])
def everything_patient(partition: str, rid: str) -> Response:
    """Return one page of a patient's compartment (R4 ``Patient/[id]/$everything``)."""
    del rid  # read into the typed request
    return _everything(partition)


@bp.route("/Patient/$everything", methods=["GET", "POST"])
def everything_patients(partition: str) -> Response:
    """Return one page of every patient's compartment in the partition (R4 ``Patient/$everything``)."""
    return _everything(partition)


def _everything(partition: str) -> Response:
    spec = current_request().everything
    assert spec is not None
    with db().unit_of_work(partition) as uow:
        body = everything_bundle(uow, spec, base_url(partition))
    return fhir_response(body)
