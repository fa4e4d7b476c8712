"""The other partition-scoped bulk operations: ``$import``, ``$reindex``, bulk update and bulk delete.

Kick-offs (each answers 202 with an absolute ``Content-Location`` under the partition's base):

- ``POST [base]/$import`` with a ``Parameters`` body (see ``core/importspec.py``);
- ``POST [base]/$reindex``, optionally with ``Parameters`` naming ``type``s; ``POST /_reindex``
  (administrators) starts one in every partition;
- ``PATCH [base]/[type]/$bulk-update?<search>`` and ``PATCH [base]/$bulk-update?_type=…&<search>`` with a
  FHIRPath Patch ``Parameters`` body; at most one per partition at a time (429);
- ``DELETE [base]/[type]/$bulk-delete?<search>`` and ``DELETE [base]/$bulk-delete?_type=…&<search>``, with
  ``_hardDelete=true`` (every version goes) or ``_purgeHistory=true`` (earlier versions go, the current
  stays).

Polling ``[base]/_operations/{kind}/{id}``: 202 with ``X-Progress`` while running, 200 with the JSON result,
the failure's OperationOutcome; ``DELETE`` cancels (what was committed stays, and the answer says so), after
which the job is 404. Error files are downloaded below the status URL. The partition always comes from the
URL; a job of another partition is 404.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, request

from api import bulk_common as common
from api.errors import operation_outcome
from api.http import base_url, fhir_response, json_body
from core.errors import InvalidRequest, Issue, NotFound, TooManyRequests
from core.fhirdates import format_instant
from core.fhirpatch import parse_patch
from core.fhirtypes import resource_types
from core.importspec import parse_import
from core.jobs import ACTIVE_STATUSES
from orchestrator import service
from orchestrator.bulk_edit import DELETE, UPDATE, committed_counts
from orchestrator.bulk_edit import check_search as check_bulk_search
from orchestrator.import_ import KIND as IMPORT
from orchestrator.import_ import prepare_import
from orchestrator.reindex import KIND as REINDEX

log = logging.getLogger(__name__)
bp = Blueprint("bulk_ops", __name__)
admin_bp = Blueprint("bulk_ops_admin", __name__)
KINDS = (IMPORT, REINDEX, UPDATE, DELETE)
_WHAT = {IMPORT: "Import", REINDEX: "Reindex", UPDATE: "Bulk update", DELETE: "Bulk delete"}
_TRUE = {"true": True, "false": False}


def _submit(partition: str, kind: str, definition: dict[str, Any], max_concurrent: int | None) -> Response:
    now = datetime.now(UTC)
    definition.setdefault("transaction_time", format_instant(now))
    job = service.submit(
        common.db(),
        partition,
        kind,
        definition,
        settings=common.settings(),
        request_url=common.request_url(partition),
        transaction_time=now,
        max_concurrent=max_concurrent,
    )
    log.info("%s %s accepted", kind, job.id, extra={"partition": partition, "job_id": job.id})
    return common.accepted(partition, kind, job.id, _WHAT[kind])


@bp.post("/$import")
def kick_off_import(partition: str) -> Response:
    """Start an import of NDJSON files into this partition."""
    _, body = json_body()
    spec = parse_import(body)
    definition = prepare_import(common.db(), common.settings(), common.store(), partition, spec)
    return _submit(partition, IMPORT, definition, common.settings().import_max_concurrent_per_partition)


def _types_of(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for rtype in (v.strip() for v in value.split(",")):
            if not rtype:
                continue
            if rtype not in resource_types():
                raise InvalidRequest(f"_type names the unknown resource type {rtype!r}")
            if rtype not in out:
                out.append(rtype)
    return out


@bp.post("/$reindex")
def kick_off_reindex(partition: str) -> Response:
    """Start a reindex of this partition (every type, or the ``type`` parameters of a Parameters body)."""
    types: list[str] = []
    if request.get_data(cache=True).strip():
        _, body = json_body()
        if body.get("resourceType") != "Parameters":
            raise InvalidRequest("The body of $reindex must be a FHIR Parameters resource")
        for param in body.get("parameter") or []:
            if not isinstance(param, dict) or param.get("name") not in {"type", "_type"}:
                raise InvalidRequest(
                    f"Unknown $reindex parameter {param.get('name') if isinstance(param, dict) else param!r}"
                )
            value = param.get("valueCode") or param.get("valueString")
            if not isinstance(value, str):
                raise InvalidRequest("type needs a valueCode or valueString")
            types.extend(_types_of([value]))
    types.extend(_types_of(request.args.getlist("_type")))
    return _submit(partition, REINDEX, {"types": types or None}, 1)


def _query(drop: set[str]) -> tuple[list[str], list[tuple[str, str]]]:
    types = _types_of(request.args.getlist("_type"))
    pairs = [(k, v) for k, vs in request.args.lists() for v in vs if k not in drop and k != "_type"]
    return types, pairs


def _flag(name: str) -> bool:
    values = request.args.getlist(name)
    if len(values) > 1 or (values and values[0].lower() not in _TRUE):
        raise InvalidRequest(f"{name} must be true or false, once")
    return bool(values) and _TRUE[values[0].lower()]


def _bulk_update(partition: str, rtype: str | None) -> Response:
    _, body = json_body()
    parse_patch(body)  # refuse a malformed patch now; processors read it from the definition
    types, pairs = _query({"_format", "_pretty"})
    types = [rtype] if rtype is not None else types
    check_bulk_search(common.db(), partition, types, pairs)
    definition = {"op": UPDATE, "types": types or None, "query": pairs, "patch": body}
    return _submit(partition, UPDATE, definition, 1)


@bp.patch("/<rtype:rtype>/$bulk-update")
def bulk_update_type(partition: str, rtype: str) -> Response:
    """Patch every resource of one type in this partition that matches the search."""
    return _bulk_update(partition, rtype)


@bp.patch("/$bulk-update")
def bulk_update_system(partition: str) -> Response:
    """Patch every resource of this partition (of ``_type``) that matches the search."""
    return _bulk_update(partition, None)


def _bulk_delete(partition: str, rtype: str | None) -> Response:
    hard, purge = _flag("_hardDelete"), _flag("_purgeHistory")
    types, pairs = _query({"_hardDelete", "_purgeHistory", "_format", "_pretty"})
    types = [rtype] if rtype is not None else types
    check_bulk_search(common.db(), partition, types, pairs)
    definition = {"op": DELETE, "types": types or None, "query": pairs, "hard": hard, "purge_history": purge}
    return _submit(partition, DELETE, definition, 1)


@bp.delete("/<rtype:rtype>/$bulk-delete")
def bulk_delete_type(partition: str, rtype: str) -> Response:
    """Delete every resource of one type in this partition that matches the search."""
    return _bulk_delete(partition, rtype)


@bp.delete("/$bulk-delete")
def bulk_delete_system(partition: str) -> Response:
    """Delete every resource of this partition (of ``_type``) that matches the search."""
    return _bulk_delete(partition, None)


def _files(partition: str, kind: str, job_id: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        item = {k: v for k, v in e.items() if k not in {"key", "file", "size"}}
        item["url"] = f"{common.job_location(partition, kind, job_id)}/{e['file']}"
        out.append(item)
    return out


def _result_body(partition: str, kind: str, job_id: str, request_url: str | None) -> Any:
    def render(result: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "transactionTime": result.get("transactionTime"),
            "request": request_url,
            "requiresAccessToken": common.settings().auth_enabled,
            "output": result.get("output", []),
            "error": _files(partition, kind, job_id, result.get("error", [])),
        }
        extension = {k: v for k, v in result.items() if k not in {"transactionTime", "output", "error"}}
        indexing = extension.get("indexing")
        if isinstance(indexing, dict) and indexing.get("reindexJob"):
            indexing["reindexStatus"] = common.job_location(partition, REINDEX, str(indexing["reindexJob"]))
        if extension:
            body["extension"] = extension
        return body

    return render


def _status(partition: str, kind: str, job_id: str) -> Response:
    view = service.status(common.db(), partition, job_id, kind=kind)
    return common.status_response(view, _WHAT[kind], _result_body(partition, kind, job_id, view.request_url))


def _cancel(partition: str, kind: str, job_id: str) -> Response:
    running = service.status(common.db(), partition, job_id, kind=kind).state in ACTIVE_STATUSES
    service.cancel(common.db(), partition, job_id, kind=kind, settings=common.settings())
    # A finished job is only released: what it did stays; its status and files go.
    message = f"{_WHAT[kind]} {job_id} cancelled"
    if not running:
        message = f"{_WHAT[kind]} {job_id} released; its files are deleted, what it did stays"
    if kind in (UPDATE, DELETE):
        counts = committed_counts(common.db(), partition, job_id)
        done = ", ".join(f"{c} {t}" for t, c in sorted(counts.items())) or "no resource"
        verb = "updated" if kind == UPDATE else "deleted"
        message += f"; {'changes already committed stay: ' if running else ''}{done} {verb}"
    elif running and kind == IMPORT:
        message += "; batches already committed stay imported (running the import again completes it)"
    elif running and kind == REINDEX:
        message += "; new search parameters stay unsearchable until a reindex completes"
    store = common.store()
    store.delete_prefix(store.job_prefix(partition, job_id))
    body = operation_outcome([Issue(message, code="informational", severity="information")])
    return fhir_response(body, 202)


def _download(partition: str, kind: str, job_id: str, name: str) -> Response:
    view = service.status(common.db(), partition, job_id, kind=kind)
    entries = (view.result or {}).get("error", []) if view.result else []
    entry = next((e for e in entries if e.get("file") == name), None)
    if entry is None:
        raise NotFound(f"{_WHAT[kind]} {job_id} has no file {name!r}")
    return common.file_response(str(entry["key"]), entry.get("size"))


def _register(kind: str) -> None:
    path = f"/_operations/{kind}/<job:job_id>"
    name = kind.replace("-", "_")
    bp.add_url_rule(
        path, f"{name}_status", lambda partition, job_id: _status(partition, kind, job_id), methods=["GET"]
    )
    bp.add_url_rule(
        path, f"{name}_cancel", lambda partition, job_id: _cancel(partition, kind, job_id), methods=["DELETE"]
    )
    bp.add_url_rule(
        f"{path}/<name>",
        f"{name}_file",
        lambda partition, job_id, name: _download(partition, kind, job_id, name),
        methods=["GET"],
    )


for _kind in KINDS:
    _register(_kind)


@admin_bp.post("/_reindex")
def reindex_everywhere() -> Response:
    """Start a reindex in every partition (administrators); list each partition's job."""
    params = []
    for info in common.db().partitions():
        parts: list[dict[str, Any]] = [{"name": "partition", "valueString": info.name}]
        try:
            now = datetime.now(UTC)
            job = service.submit(
                common.db(),
                info.name,
                REINDEX,
                {"types": None, "transaction_time": format_instant(now)},
                settings=common.settings(),
                request_url=f"{base_url(info.name)}/$reindex",
                transaction_time=now,
                max_concurrent=1,
            )
            parts.append({"name": "location", "valueUrl": common.job_location(info.name, REINDEX, job.id)})
        except TooManyRequests as exc:
            parts.append({"name": "outcome", "valueString": exc.message})
        params.append({"name": "reindex", "part": parts})
    return fhir_response({"resourceType": "Parameters", "parameter": params}, 202)
