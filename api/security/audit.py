"""Audit every request (after it is answered) and let administrators query the trail: ``GET /_audit``."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from api.http import fhir_response
from api.security.auth import current_principal, request_partition, require_admin
from core.fhirdates import format_instant, parse_instant
from core.urlvalues import bounded_int, capped_int
from services.bundle_requests import EntryOutcome
from services.parse import bare_endpoint
from services.requests import FhirRequest
from storage import Database
from storage.audit import AuditEvent, AuditLog, AuditRecord

log = logging.getLogger(__name__)
bp = Blueprint("audit", __name__)

PARTITION_EXTENSION = "https://bulkhead.dev/fhir/StructureDefinition/partition"
_ACTIONS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
_NOT_AUDITED = {"/metrics"}


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    if status in {401, 403}:
        return "denied"
    return "failure" if status < 500 else "error"


def _log() -> AuditLog:
    audit: AuditLog = current_app.extensions["bulkhead.audit"]
    return audit


def _described() -> tuple[str, FhirRequest | None]:
    """Return the audited operation name and the typed request, when one was read."""
    typed: FhirRequest | None = g.get("bulkhead_request")
    if typed is not None:
        return str(typed.interaction), typed
    endpoint = bare_endpoint(request.endpoint or "")
    return (endpoint.partition(".")[2] or "unknown").replace("_", "-"), None


def _entry_events(base: AuditEvent) -> list[AuditEvent]:
    """Return one event per entry of the batch or transaction this request ran, if it ran one."""
    outcomes: list[EntryOutcome] = g.get("bulkhead_entry_outcomes") or []
    return [
        replace(
            base,
            operation=f"entry.{o.interaction}",
            outcome=_outcome(o.status),
            resource_type=o.resource_type,
            resource_id=o.resource_id,
            method=o.method,
            path=o.url[:2048],
            status=o.status,
            detail=f"Bundle.entry[{o.index}]",
        )
        for o in outcomes
    ]


def record_request(response: Response) -> Response:
    """Append the audit event of the request just answered, and one per Bundle entry it ran (after_request);
    never fail the request."""
    if request.path in _NOT_AUDITED:
        return response
    try:
        operation, typed = _described()
        principal = current_principal()
        view_args = request.view_args or {}
        job_id = view_args.get("job_id")
        event = AuditEvent(
            operation=operation,
            outcome=_outcome(response.status_code),
            partition=request_partition(),
            actor=principal.subject if principal is not None else None,
            resource_type=typed.resource_type if typed is not None else view_args.get("rtype"),
            resource_id=typed.resource_id if typed is not None else view_args.get("rid"),
            job_id=str(job_id) if job_id is not None else None,
            method=request.method,
            path=request.full_path.rstrip("?"),
            status=response.status_code,
            source_address=request.remote_addr,
        )
        _log().submit([event, *_entry_events(event)])
    except Exception:
        log.exception("could not write the audit event of %s %s", request.method, request.path)
    return response


def audit_event_resource(record: AuditRecord) -> dict[str, Any]:
    """Render a stored event as a FHIR R4 AuditEvent resource."""
    e = record.event
    is_job = e.operation.startswith("job.")
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(record.id),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "https://bulkhead.dev/fhir/CodeSystem/operation", "code": e.operation}],
        "action": _ACTIONS.get(e.method or "", "E"),
        "recorded": format_instant(record.recorded_at),
        "outcome": {"success": "0", "denied": "4", "failure": "4", "error": "8"}.get(e.outcome, "0"),
        "outcomeDesc": f"HTTP {e.status}" if e.status is not None else e.outcome,
        "agent": [
            {
                "who": {"identifier": {"value": e.actor or ("system" if is_job else "anonymous")}},
                "requestor": not is_job,
                **({"network": {"address": e.source_address, "type": "2"}} if e.source_address else {}),
            }
        ],
        "source": {"observer": {"display": "Bulkhead"}},
    }
    entities: list[dict[str, Any]] = []
    if e.resource_type and e.resource_id:
        entities.append({"what": {"reference": f"{e.resource_type}/{e.resource_id}"}})
    elif e.resource_type:
        entities.append({"what": {"display": e.resource_type}})
    if e.job_id:
        entities.append({"what": {"identifier": {"system": "https://bulkhead.dev/job", "value": e.job_id}}})
    if e.path:
        entities.append({"what": {"display": f"{e.method} {e.path}"}})
    if e.detail:
        entities.append({"detail": [{"type": "detail", "valueString": e.detail}]})
    if entities:
        resource["entity"] = entities
    if e.partition:
        resource["extension"] = [{"url": PARTITION_EXTENSION, "valueString": e.partition}]
    return resource


def _int(name: str, default: int | None, maximum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    return capped_int(raw, name, maximum) if maximum is not None else bounded_int(raw, name)


@bp.get("/_audit")
def query() -> Response:
    """Return audit events, newest first, as a Bundle of AuditEvent (administrators only)."""
    require_admin()
    args = request.args
    count = _int("_count", 100, 1000) or 100
    since, until = args.get("since"), args.get("until")
    records = _log().query(
        partition=args.get("partition"),
        operation=args.get("operation"),
        job_id=args.get("job"),
        actor=args.get("actor"),
        since=parse_instant(since) if since else None,
        until=parse_instant(until) if until else None,
        before_id=_int("_before", None),
        limit=count,
    )
    links = [{"relation": "self", "url": request.url}]
    if len(records) == count:
        params = {**args.to_dict(flat=True), "_before": str(records[-1].id)}
        query_string = "&".join(f"{k}={v}" for k, v in params.items())
        links.append({"relation": "next", "url": f"{request.base_url}?{query_string}"})
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [{"resource": audit_event_resource(r)} for r in records],
        }
    )


def init_audit(app: Flask, database: Database) -> None:
    """Register the audit endpoint, and the after_request hook when auditing is on."""
    app.extensions["bulkhead.audit"] = AuditLog(database)
    app.register_blueprint(bp)
    if app.config["BULKHEAD_SETTINGS"].audit_enabled:
        app.after_request(record_request)
