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
URL; a job of another partition, or one another client started (unless the caller is an administrator), is
404.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response

from api import bulk_common as common
from api.http import base_url, fhir_response
from api.typed import current_request
from core.errors import Issue, NotFound, TooManyRequests
from core.fhirdates import format_instant
from core.jobs import ACTIVE_STATUSES
from core.outcome import operation_outcome
from orchestrator import service
from orchestrator.bulk_edit import DELETE, UPDATE, committed_counts
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
        caller=common.job_caller(),
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
    spec = current_request().import_spec
    assert spec is not None
    definition = prepare_import(common.db(), common.settings(), common.store(), partition, spec)
    return _submit(partition, IMPORT, definition, common.settings().import_max_concurrent_per_partition)


@bp.post("/$reindex")
def kick_off_reindex(partition: str) -> Response:
    """Start a reindex of this partition (every type, or the ``type`` parameters of a Parameters body)."""
    types = list(current_request().reindex_types)
    return _submit(partition, REINDEX, {"types": types or None}, 1)


def _bulk_update(partition: str) -> Response:
    edit = current_request().bulk_edit
    assert edit is not None
    definition = {
        "op": UPDATE,
        "types": list(edit.types) or None,
        "query": [list(p) for p in edit.pairs],
        "patch": edit.patch,
    }
    return _submit(partition, UPDATE, definition, 1)


@bp.patch("/<rtype:rtype>/$bulk-update")
def bulk_update_type(partition: str, rtype: str) -> Response:
    """Patch every resource of one type in this partition that matches the search."""
    return _bulk_update(partition)


@bp.patch("/$bulk-update")
def bulk_update_system(partition: str) -> Response:
    """Patch every resource of this partition (of ``_type``) that matches the search."""
    return _bulk_update(partition)


def _bulk_delete(partition: str) -> Response:
    edit = current_request().bulk_edit
    assert edit is not None
    definition = {
        "op": DELETE,
        "types": list(edit.types) or None,
        "query": [list(p) for p in edit.pairs],
        "hard": edit.hard,
        "purge_history": edit.purge_history,
    }
    return _submit(partition, DELETE, definition, 1)


@bp.delete("/<rtype:rtype>/$bulk-delete")
def bulk_delete_type(partition: str, rtype: str) -> Response:
    """Delete every resource of one type in this partition that matches the search."""
    return _bulk_delete(partition)


@bp.delete("/$bulk-delete")
def bulk_delete_system(partition: str) -> Response:
    """Delete every resource of this partition (of ``_type``) that matches the search."""
    return _bulk_delete(partition)


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
    view = service.status(common.db(), partition, job_id, caller=common.job_caller(), kind=kind)
    return common.status_response(view, _WHAT[kind], _result_body(partition, kind, job_id, view.request_url))


def _cancel(partition: str, kind: str, job_id: str) -> Response:
    caller = common.job_caller()
    running = (
        service.status(common.db(), partition, job_id, caller=caller, kind=kind).state in ACTIVE_STATUSES
    )
    job = service.cancel(common.db(), partition, job_id, caller=caller, kind=kind, settings=common.settings())
    # A finished job is only released: what it did stays; its status and files go.
    message = f"{_WHAT[kind]} {job_id} cancelled"
    if not running:
        message = f"{_WHAT[kind]} {job_id} released; its files are deleted, what it did stays"
    if kind in (UPDATE, DELETE):
        counts = committed_counts(common.db(), job)
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
    view = service.status(common.db(), partition, job_id, caller=common.job_caller(), kind=kind)
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
                caller=common.job_caller(),
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
