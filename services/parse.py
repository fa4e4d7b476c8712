"""Read a routed HTTP request into a ``FhirRequest``, once (no Flask here: the API hands over the parts).

The path was parsed by the router (the endpoint and its arguments: percent-decoding happened there, once);
this module reads the query, the headers that change meaning (``If-None-Exist``, ``Prefer: handling``) and
the body into the typed request the authorizer judges and the views run. Each endpoint has one reader in
``READERS``; an endpoint without one is refused by the authorizer (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidRequest, UnsupportedMediaType
from core.exportspec import GROUP, PATIENT, SYSTEM
from core.fhirjson import parse_object
from core.fhirpatch import parse_patch
from core.fhirtypes import resource_types
from core.importspec import parse_import
from services.bundle_entries import Bases, read_bundle
from services.bundle_requests import entry_request, parse_entry_searches
from services.export_params import body_parameters, parse_export, prefers
from services.requests import BulkEdit, BundleRequest, FhirRequest, Interaction, JobTarget, Need
from storage.search import SearchQuery, SearchRegistry, parse_search, query_pairs

Registry = Callable[[], SearchRegistry]
_FORM = "application/x-www-form-urlencoded"
_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_TRUE = {"true": True, "false": False}
JOB_KINDS = ("export", "import", "reindex", "bulk-update", "bulk-delete")


@dataclass(frozen=True)
class RequestParts:
    """What a typed request is read from: the routed endpoint and the raw parts of the HTTP request."""

    endpoint: str
    method: str
    partition: str
    view_args: Mapping[str, Any] = field(default_factory=dict)
    args: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    mimetype: str = ""
    roots: tuple[str, ...] = ()
    max_page_size: int = 1000
    max_transaction_entries: int = 1000

    def header(self, name: str) -> str | None:
        """Return a header's value (names are compared case-insensitively)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def lenient(self) -> bool:
        """Return whether the client asked for ``Prefer: handling=lenient``."""
        return prefers(self.header("Prefer")).get("handling") == "lenient"

    @property
    def reading(self) -> bool:
        """Return whether the method reads (GET or HEAD)."""
        return self.method in {"GET", "HEAD"}


Reader = Callable[[RequestParts, Registry], FhirRequest]


def _typed(parts: RequestParts, interaction: Interaction, **fields: Any) -> FhirRequest:
    return FhirRequest(interaction, parts.partition, parts.method, **fields)


def json_object(parts: RequestParts) -> dict[str, Any]:
    """Return the JSON body (415 for another content type, 400 for no or malformed JSON)."""
    if parts.mimetype not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {parts.mimetype or '(none)'!r} is not supported; send application/fhir+json"
        )
    if not parts.body.strip():
        raise InvalidRequest("The request body is empty")
    return parse_object(parts.body)


def _criteria(registry: Registry, rtype: str, pairs: list[tuple[str, str]], what: str) -> SearchQuery:
    query = parse_search(registry(), [rtype], pairs, criteria_only=True)
    if not query.criteria:
        raise InvalidRequest(f"The {what} names no search parameters")
    return query


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
    return _typed(parts, Interaction.SEARCH_TYPE, resource_type=rtype, search=query)


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
    return _typed(parts, Interaction.SEARCH_SYSTEM, search=query)


def _instance(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        return _typed(
            parts,
            interaction,
            resource_type=str(parts.view_args["rtype"]),
            resource_id=str(parts.view_args["rid"]),
            version_id=str(parts.view_args["vid"]) if "vid" in parts.view_args else None,
        )

    return read


def _create(parts: RequestParts, registry: Registry) -> FhirRequest:
    rtype = str(parts.view_args["rtype"])
    condition = parts.header("If-None-Exist")
    query = None
    if condition is not None:
        query = _criteria(registry, rtype, query_pairs(condition), "If-None-Exist condition")
    return _typed(parts, Interaction.CREATE, resource_type=rtype, search=query)


def _conditional(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, registry: Registry) -> FhirRequest:
        rtype = str(parts.view_args["rtype"])
        query = _criteria(registry, rtype, list(parts.args), "condition")
        return _typed(parts, interaction, resource_type=rtype, search=query)

    return read


def _history(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        rtype = parts.view_args.get("rtype")
        rid = parts.view_args.get("rid")
        return _typed(
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
    typed = tuple(entry_request(entry, parts.partition) for entry in entries)
    return _typed(parts, interaction, bundle=BundleRequest(kind, entries, bases), entries=typed)


def _export(level: str) -> Reader:
    def read(parts: RequestParts, registry: Registry) -> FhirRequest:
        pairs = list(parts.args)
        if parts.method == "POST" and parts.body.strip():
            pairs += body_parameters(json_object(parts))
        group_id = parts.view_args.get("group_id")
        spec = parse_export(
            pairs,
            level=level,
            group_id=str(group_id) if group_id is not None else None,
            method=parts.method,
            lenient=parts.lenient,
        )
        filters = tuple(
            _criteria(registry, rtype, list(query), "_typeFilter")
            for rtype, queries in spec.type_filters.items()
            for query in queries
        )
        rtype = {SYSTEM: None, PATIENT: "Patient", GROUP: "Group"}[level]
        return _typed(parts, Interaction.EXPORT, resource_type=rtype, export=spec, type_filters=filters)

    return read


def _import(parts: RequestParts, _registry: Registry) -> FhirRequest:
    return _typed(parts, Interaction.IMPORT, import_spec=parse_import(json_object(parts)))


def types_of(values: list[str]) -> list[str]:
    """Return the resource types of comma-separated lists, each once (400 for an unknown one)."""
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


def _reindex(parts: RequestParts, _registry: Registry) -> FhirRequest:
    types: list[str] = []
    if parts.body.strip():
        body = json_object(parts)
        if body.get("resourceType") != "Parameters":
            raise InvalidRequest("The body of $reindex must be a FHIR Parameters resource")
        for param in body.get("parameter") or []:
            if not isinstance(param, dict) or param.get("name") not in {"type", "_type"}:
                name = param.get("name") if isinstance(param, dict) else param
                raise InvalidRequest(f"Unknown $reindex parameter {name!r}")
            value = param.get("valueCode") or param.get("valueString")
            if not isinstance(value, str):
                raise InvalidRequest("type needs a valueCode or valueString")
            types.extend(types_of([value]))
    types.extend(types_of([v for k, v in parts.args if k == "_type"]))
    return _typed(parts, Interaction.REINDEX, reindex_types=tuple(dict.fromkeys(types)))


def _flag(parts: RequestParts, name: str) -> bool:
    values = [v for k, v in parts.args if k == name]
    if len(values) > 1 or (values and values[0].lower() not in _TRUE):
        raise InvalidRequest(f"{name} must be true or false, once")
    return bool(values) and _TRUE[values[0].lower()]


def _bulk_edit(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, registry: Registry) -> FhirRequest:
        patch = None
        if interaction == Interaction.BULK_UPDATE:
            patch = json_object(parts)
            parse_patch(patch)  # refuse a malformed patch now; processors read it from the definition
        drop = {"_format", "_pretty", "_type"}
        if interaction == Interaction.BULK_DELETE:
            drop |= {"_hardDelete", "_purgeHistory"}
        rtype = parts.view_args.get("rtype")
        types = [str(rtype)] if rtype is not None else types_of([v for k, v in parts.args if k == "_type"])
        pairs = [(k, v) for k, v in parts.args if k not in drop]
        searches: tuple[SearchQuery, ...] = ()
        if pairs:
            checked = types or sorted(resource_types())
            searches = tuple(parse_search(registry(), [t], pairs, criteria_only=True) for t in checked)
        edit = BulkEdit(
            types=tuple(types),
            pairs=tuple(pairs),
            searches=searches,
            patch=patch,
            hard=_flag(parts, "_hardDelete") if interaction == Interaction.BULK_DELETE else False,
            purge_history=_flag(parts, "_purgeHistory") if interaction == Interaction.BULK_DELETE else False,
        )
        return _typed(parts, interaction, bulk_edit=edit)

    return read


def _job(interaction: Interaction, kind: str | None) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        job_id = parts.view_args.get("job_id")
        name = parts.view_args.get("name")
        target = JobTarget(
            kind, str(job_id) if job_id is not None else None, str(name) if name is not None else None
        )
        return _typed(parts, interaction, job=target)

    return read


def _plain(interaction: Interaction) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        return _typed(parts, interaction)

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
    "transactions.batch_or_transaction": _bundle,
    "transactions.other_methods_on_the_base": _plain(Interaction.NOT_ALLOWED),
    "bulk_export.export_system": _export(SYSTEM),
    "bulk_export.export_patients": _export(PATIENT),
    "bulk_export.export_group": _export(GROUP),
    "bulk_export.status": _job(Interaction.JOB_STATUS, "export"),
    "bulk_export.cancel": _job(Interaction.JOB_CANCEL, "export"),
    "bulk_export.download": _job(Interaction.JOB_FILE, "export"),
    "bulk_export.list_operations": _job(Interaction.JOB_LIST, None),
    "bulk_ops.kick_off_import": _import,
    "bulk_ops.kick_off_reindex": _reindex,
    "bulk_ops.bulk_update_type": _bulk_edit(Interaction.BULK_UPDATE),
    "bulk_ops.bulk_update_system": _bulk_edit(Interaction.BULK_UPDATE),
    "bulk_ops.bulk_delete_type": _bulk_edit(Interaction.BULK_DELETE),
    "bulk_ops.bulk_delete_system": _bulk_edit(Interaction.BULK_DELETE),
    "metadata.metadata": _plain(Interaction.CAPABILITIES),
    "smart.smart_configuration": _plain(Interaction.CAPABILITIES),
}
for _kind in JOB_KINDS[1:]:
    _name = _kind.replace("-", "_")
    READERS[f"bulk_ops.{_name}_status"] = _job(Interaction.JOB_STATUS, _kind)
    READERS[f"bulk_ops.{_name}_cancel"] = _job(Interaction.JOB_CANCEL, _kind)
    READERS[f"bulk_ops.{_name}_file"] = _job(Interaction.JOB_FILE, _kind)

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
_ROUTE_TYPES = {"bulk_export.export_patients": "Patient", "bulk_export.export_group": "Group"}


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
    "types_of",
]
