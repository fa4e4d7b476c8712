"""The CapabilityStatement (``GET [base]/metadata``) and the partition list (``GET /partitions``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app

from api.http import base_url, fhir_response
from core.fhirdates import format_instant
from core.fhirtypes import FHIR_VERSION, resource_types

# CapabilityStatement.date: when this server process started (what it serves can change at each start).
_STARTED = format_instant(datetime.now(UTC))

bp = Blueprint("metadata", __name__)
admin_bp = Blueprint("partitions", __name__)

PARTITIONS_EXTENSION = "https://bulkhead.dev/fhir/StructureDefinition/data-partitions"
_OPS = "https://bulkhead.dev/fhir/OperationDefinition/"
BULK_OPERATIONS = [
    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
    {"name": "import", "definition": _OPS + "import"},
    {"name": "reindex", "definition": _OPS + "reindex"},
    {"name": "bulk-update", "definition": _OPS + "bulk-update"},
    {"name": "bulk-delete", "definition": _OPS + "bulk-delete"},
]
EVERYTHING = {
    "name": "everything",
    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
}
INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]


def _search_params(rtype: str, registry: Any = None) -> list[dict[str, Any]]:
    from api.capabilities import search_params_for

    return search_params_for(rtype, registry)


def _partition_registry(partition: str) -> Any:
    """Return the partition's search registry when it has parameters of its own, else None (built-in)."""
    import storage.custom_params  # noqa: F401 - registers the partitions' own parameters
    from storage.search import builtin_registry, registry_for

    with current_app.extensions["bulkhead.db"].unit_of_work(partition) as uow:
        pid = uow.resources.partition_id()
        registry = registry_for(uow.session, pid) if pid is not None else None
    return None if registry is None or registry is builtin_registry() else registry


def search_limitations_extension() -> dict[str, Any]:
    """Return the extension listing the search features Bulkhead does not support."""
    from api.capabilities import search_limitations_extension as limitations

    return limitations()


def _security(settings: Any) -> dict[str, Any]:
    """Return rest.security when authentication is on: SMART on FHIR with the token endpoint."""
    if not settings.auth_enabled:
        return {}
    from api.security.smart import token_endpoint_url

    return {
        "security": {
            "cors": False,
            "service": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                            "code": "SMART-on-FHIR",
                        }
                    ]
                }
            ],
            "extension": [
                {
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "token", "valueUri": token_endpoint_url()}],
                }
            ],
            "description": "Bearer tokens (SMART Backend Services); see .well-known/smart-configuration",
        }
    }


def capability_statement(partition: str) -> dict[str, Any]:
    """Build the CapabilityStatement of one partition's base."""
    settings = current_app.config["BULKHEAD_SETTINGS"]
    registry = _partition_registry(partition)
    resources = []
    for rtype in sorted(resource_types()):
        resources.append(
            {
                "type": rtype,
                "interaction": [{"code": code} for code in INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchParam": _search_params(rtype, registry),
                **({"operation": [EVERYTHING]} if rtype == "Patient" else {}),
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "kind": "instance",
        "software": {"name": "Bulkhead", "version": "0.1.0"},
        "implementation": {"description": "Bulkhead multi-tenant FHIR R4 server", "url": base_url(partition)},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "extension": [
            {
                "url": PARTITIONS_EXTENSION,
                "extension": [
                    {"url": "enabled", "valueBoolean": bool(settings.partitions_enabled)},
                    {"url": "partition", "valueString": partition},
                    {"url": "baseTemplate", "valueString": "/partitions/{name}"},
                ],
            }
        ],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
                "operation": BULK_OPERATIONS,
                "extension": [search_limitations_extension()],
                **_security(settings),
            }
        ],
    }


@bp.get("/metadata")
def metadata(partition: str) -> Response:
    """Return the CapabilityStatement."""
    return fhir_response(capability_statement(partition))


@admin_bp.get("/partitions")
def list_partitions() -> Response:
    """List every partition with its creation time and live resource count."""
    items = current_app.extensions["bulkhead.db"].partitions()
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "partition",
                "part": [
                    {"name": "name", "valueString": p.name},
                    {"name": "created", "valueInstant": format_instant(p.created_at)},
                    {"name": "resourceCount", "valueInteger": p.resource_count},
                ],
            }
            for p in items
        ],
    }
    return fhir_response(body)
