"""Readers of the bulk operations' kick-offs and job URLs: ``$export``, ``$import``, ``$reindex``, bulk
update and bulk delete, and their status, cancel and file URLs."""

from __future__ import annotations

from core.errors import InvalidRequest
from core.exportspec import GROUP, PATIENT, SYSTEM
from core.fhirpatch import parse_patch
from core.fhirtypes import resource_types
from core.importspec import parse_import
from services.export_params import body_parameters, parse_export
from services.request_parts import Reader, Registry, RequestParts, criteria, json_object, typed
from services.requests import BulkEdit, FhirRequest, Interaction, JobTarget
from storage.search import SearchQuery, parse_search

_TRUE = {"true": True, "false": False}
JOB_KINDS = ("export", "import", "reindex", "bulk-update", "bulk-delete")


def export(level: str) -> Reader:
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
            criteria(registry, rtype, list(query), "_typeFilter")
            for rtype, queries in spec.type_filters.items()
            for query in queries
        )
        rtype = {SYSTEM: None, PATIENT: "Patient", GROUP: "Group"}[level]
        return typed(parts, Interaction.EXPORT, resource_type=rtype, export=spec, type_filters=filters)

    return read


def read_import(parts: RequestParts, _registry: Registry) -> FhirRequest:
    return typed(parts, Interaction.IMPORT, import_spec=parse_import(json_object(parts)))


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


def reindex(parts: RequestParts, _registry: Registry) -> FhirRequest:
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
    return typed(parts, Interaction.REINDEX, reindex_types=tuple(dict.fromkeys(types)))


def _flag(parts: RequestParts, name: str) -> bool:
    values = [v for k, v in parts.args if k == name]
    if len(values) > 1 or (values and values[0].lower() not in _TRUE):
        raise InvalidRequest(f"{name} must be true or false, once")
    return bool(values) and _TRUE[values[0].lower()]


def bulk_edit(interaction: Interaction) -> Reader:
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
        return typed(parts, interaction, bulk_edit=edit)

    return read


def job(interaction: Interaction, kind: str | None) -> Reader:
    def read(parts: RequestParts, _registry: Registry) -> FhirRequest:
        job_id = parts.view_args.get("job_id")
        name = parts.view_args.get("name")
        target = JobTarget(
            kind, str(job_id) if job_id is not None else None, str(name) if name is not None else None
        )
        return typed(parts, interaction, job=target)

    return read


__all__ = ["JOB_KINDS", "bulk_edit", "export", "job", "read_import", "reindex", "types_of"]
