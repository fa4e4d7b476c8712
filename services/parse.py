"""Read a routed HTTP request into a ``FhirRequest``, once (no Flask here: the API hands over the parts).

The path was parsed by the router (the endpoint and its arguments: percent-decoding happened there, once);
this module reads the query, the headers that change meaning (``If-None-Exist``, ``Prefer: handling``) and
the body into the typed request the authorizer judges and the views run. Each endpoint has one reader in
``READERS``; an endpoint without one is refused by the authorizer (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InvalidRequest, UnsupportedMediaType
from core.exportspec import GROUP, PATIENT, SYSTEM
from core.fhirtypes import resource_types
from services.bundle_entries import Bases, read_bundle
from services.bundle_requests import entry_request, parse_entry_searches
from services.everything import read_everything
from services.read_bulk import JOB_KINDS, bulk_edit, export, job, read_import, reindex
from services.request_parts import (
    Reader,
    Registry,
    RequestParts,
    criteria,
    json_object,
    refuse_unknown_params,
    typed,
)
from services.requests import BundleRequest, FhirRequest, Interaction, Need
from storage.search import SearchQuery, parse_search, query_pairs

_FORM = "application/x-www-form-urlencoded"


def _search_query(
    parts: RequestParts, registry: Registry, types: list[str], pairs: list[tuple[str, str]]
) -> SearchQuery:
    return parse_search(registry(), types, pairs, lenient=parts.lenient, max_count=parts.max_page_size)


def _type_search(parts: RequestParts, registry: Registry) -> FhirRequest:
    rtype = str(parts.view_args["rtype"])
    pairs = list(parts.args)
    if parts.method == "POST":
        pairs += _form(parts)
    query = _search_query(parts, registry, [rtype], pairs)
    return typed(parts, Interaction.SEARCH_TYPE, resource_type=rtype, search=query)


def _form(parts: RequestParts) -> list[tuple[str, str]]:
    if parts.mimetype not in {_FORM, ""} and parts.body.strip():
        raise UnsupportedMediaType(f"POST _search takes {_FORM}, not {parts.mimetype!r}")
    return list(parts.form)


def system_types(pairs: list[tuple[str, str]]) -> list[str]:
    """Return the types a system search names with ``_type`` (every type when it names none)."""
    names = [t.strip() for name, value in pairs if name == "_type" for t in value.split(",") if t.strip()]
    unknown = [t for t in names if t not in resource_types()]
    if unknown:
        raise InvalidRequest(f"_type names unknown resource types: {', '.join(sorted(unknown))}")
    return sorted(set(names)) if names else sorted(resource_types())


def _system_search(parts: RequestParts, registry: Registry) -> FhirRequest:
    pairs = list(parts.args)
    if parts.method == "POST":
        pairs += _form(parts)
    query = _search_query(parts, registry, system_types(pairs), pairs)
    return typed(parts, Interaction.SEARCH_SYSTEM, search=query)


def _instance(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        return typed(
            parts,
            interaction,
            resource_type=str(parts.view_args["rtype"]),
            resource_id=str(parts.view_args["rid"]),
            version_id=str(parts.view_args["vid"]) if "vid" in parts.view_args else None,
        )

    return read


def _create(parts: RequestParts, registry: Registry) -> FhirRequest:
    rtype = str(parts.view_args["rtype"])
    # A create has no query: a condition goes in If-None-Exist (a client sending one in the URL would
    # otherwise create a duplicate where it meant a conditional create).
    refuse_unknown_params(parts, frozenset(), f"POST {rtype} (create; a condition goes in If-None-Exist)")
    condition = parts.header("If-None-Exist")
    query = None
    if condition is not None:
        query = criteria(registry, rtype, query_pairs(condition), "If-None-Exist condition")
    return typed(parts, Interaction.CREATE, resource_type=rtype, search=query)


def _conditional(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, registry: Registry) -> FhirRequest:
        rtype = str(parts.view_args["rtype"])
        query = criteria(registry, rtype, list(parts.args), "condition")
        return typed(parts, interaction, resource_type=rtype, search=query)

    return read


_HISTORY_PARAMS = frozenset({"_count", "_since", "_at", "_offset", "_summary"})


def _history(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        rtype = parts.view_args.get("rtype")
        rid = parts.view_args.get("rid")
        refuse_unknown_params(parts, _HISTORY_PARAMS, "_history")
        return typed(
            parts,
            interaction,
            resource_type=str(rtype) if rtype is not None else None,
            resource_id=str(rid) if rid is not None else None,
        )

    return read


def _bundle(parts: RequestParts, registry: Registry) -> FhirRequest:
    body = json_object(parts)
    bases = Bases(parts.partition, parts.roots)
    kind, entries = read_bundle(parts.body, body, bases, parts.max_transaction_entries)
    parse_entry_searches(entries, registry, parts.max_page_size)
    interaction = Interaction.TRANSACTION if kind == "transaction" else Interaction.BATCH
    each = tuple(entry_request(entry, parts.partition) for entry in entries)
    return typed(parts, interaction, bundle=BundleRequest(kind, entries, bases), entries=each)


def _plain(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        return typed(parts, interaction)

    return read


READERS: dict[str, Reader] = {
    "search.search_type": _type_search,
    "search.search_type_post": _type_search,
    "search.search_system": _system_search,
    "search.search_system_post": _system_search,
    "fhir.create": _create,
    "fhir.read": _instance(Interaction.READ),
    "fhir.vread": _instance(Interaction.VREAD),
    "fhir.update": _instance(Interaction.UPDATE),
    "fhir.patch": _instance(Interaction.PATCH),
    "fhir.delete": _instance(Interaction.DELETE),
    "fhir.conditional_update": _conditional(Interaction.CONDITIONAL_UPDATE),
    "fhir.conditional_patch": _conditional(Interaction.CONDITIONAL_PATCH),
    "fhir.conditional_delete": _conditional(Interaction.CONDITIONAL_DELETE),
    "fhir.instance_history": _history(Interaction.HISTORY_INSTANCE),
    "fhir.type_history": _history(Interaction.HISTORY_TYPE),
    "fhir.system_history": _history(Interaction.HISTORY_SYSTEM),
    "fhir.everything_patient": read_everything,
    "fhir.everything_patients": read_everything,
    "transactions.batch_or_transaction": _bundle,
    "transactions.other_methods_on_the_base": _plain(Interaction.NOT_ALLOWED),
    "bulk_export.export_system": export(SYSTEM),
    "bulk_export.export_patients": export(PATIENT),
    "bulk_export.export_group": export(GROUP),
    "bulk_export.status": job(Interaction.JOB_STATUS, "export"),
    "bulk_export.cancel": job(Interaction.JOB_CANCEL, "export"),
    "bulk_export.download": job(Interaction.JOB_FILE, "export"),
    "bulk_export.list_operations": job(Interaction.JOB_LIST, None),
    "bulk_ops.kick_off_import": read_import,
    "bulk_ops.kick_off_reindex": reindex,
    "bulk_ops.bulk_update_type": bulk_edit(Interaction.BULK_UPDATE),
    "bulk_ops.bulk_update_system": bulk_edit(Interaction.BULK_UPDATE),
    "bulk_ops.bulk_delete_type": bulk_edit(Interaction.BULK_DELETE),
    "bulk_ops.bulk_delete_system": bulk_edit(Interaction.BULK_DELETE),
    "metadata.metadata": _plain(Interaction.CAPABILITIES),
    "smart.smart_configuration": _plain(Interaction.CAPABILITIES),
}
for _kind in JOB_KINDS[1:]:
    _name = _kind.replace("-", "_")
    READERS[f"bulk_ops.{_name}_status"] = job(Interaction.JOB_STATUS, _kind)
    READERS[f"bulk_ops.{_name}_cancel"] = job(Interaction.JOB_CANCEL, _kind)
    READERS[f"bulk_ops.{_name}_file"] = job(Interaction.JOB_FILE, _kind)

# Endpoints outside the typed requests: public ones, the system's own (no partition), and administrators'
# ones (a token for every partition).
PUBLIC_ENDPOINTS = frozenset({"metadata.metadata", "smart.smart_configuration", "smart_token.token"})
SYSTEM_ENDPOINTS = frozenset({"smart_token.token"})
ADMIN_ENDPOINTS = frozenset(
    {
        "audit.query",
        "partitions.list_partitions",
        "partition_config.list_config",
        "partition_config.get_config",
        "partition_config.put_config",
        "partition_config.delete_config",
        "bulk_ops_admin.reindex_everywhere",
        "metrics.metrics",
    }
)


# What the route alone says a request needs (on the type the router found), checked before the query and
# the body are read: a token without them hears 403, not a 400 about a body it may not send anyway.
_ROUTE_LETTERS = {
    "fhir.create": "c",
    "fhir.read": "r",
    "fhir.vread": "r",
    "fhir.instance_history": "r",
    "fhir.update": "u",
    "fhir.patch": "u",
    "fhir.delete": "d",
    "fhir.conditional_update": "us",
    "fhir.conditional_patch": "us",
    "fhir.conditional_delete": "ds",
    "fhir.type_history": "rs",
    "search.search_type": "s",
    "search.search_type_post": "s",
    "bulk_ops.bulk_update_type": "us",
    "bulk_ops.bulk_delete_type": "ds",
}
_ROUTE_TYPES = {
    "bulk_export.export_patients": "Patient",
    "bulk_export.export_group": "Group",
    "fhir.everything_patient": "Patient",
    "fhir.everything_patients": "Patient",
}


def route_needs(endpoint: str, view_args: Mapping[str, Any]) -> tuple[Need, ...]:
    """Return the permissions the routed endpoint needs whatever its query and body say (a subset of the
    typed request's needs)."""
    if endpoint in _ROUTE_TYPES:
        return (Need("r", _ROUTE_TYPES[endpoint]),)
    letters = _ROUTE_LETTERS.get(endpoint, "")
    rtype = view_args.get("rtype")
    if not letters or rtype is None:
        return ()
    return tuple(Need(letter, str(rtype)) for letter in letters)


def bare_endpoint(endpoint: str) -> str:
    """Return the endpoint without the ``p_`` of the blueprints registered under ``/partitions/<name>``."""
    return endpoint.removeprefix("p_")


def read_request(parts: RequestParts, registry: Registry) -> FhirRequest:
    """Return the typed request of a routed request; KeyError for an endpoint without a reader."""
    reader = READERS[parts.endpoint]
    return reader(parts, registry)


__all__ = [
    "ADMIN_ENDPOINTS",
    "PUBLIC_ENDPOINTS",
    "READERS",
    "SYSTEM_ENDPOINTS",
    "RequestParts",
    "bare_endpoint",
    "json_object",
    "read_request",
    "route_needs",
    "system_types",
]
