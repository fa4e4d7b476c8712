"""Search capabilities advertised in the CapabilityStatement: parameters per type, and what is missing.

``search_params_for`` lists every parameter Bulkhead answers for a type (name, type, definition URL and the
modifiers and prefixes it accepts). ``search_limitations_extension`` says plainly what is not supported, so
that a client never mistakes a silently ignored parameter for a filter.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from core.fhirtypes import resource_types
from storage.search import SearchRegistry, builtin_registry
from storage.search.query import MODIFIERS, PREFIXES, UNSUPPORTED_RESULT, UNSUPPORTED_SEARCH

LIMITATIONS_EXTENSION = "https://bulkhead.dev/fhir/StructureDefinition/search-limitations"
_R4_SP = "http://hl7.org/fhir/SearchParameter/"
_RESOURCE_PARAMS = {
    "_id": ("token", _R4_SP + "Resource-id", "Logical id. Modifier :not."),
    "_lastUpdated": ("date", _R4_SP + "Resource-lastUpdated", "When the version was stored. Prefixes: "),
}
_PREFIXED = frozenset({"date", "number", "quantity"})
UNSUPPORTED_FEATURES = (
    "composite search parameters (for example Observation code-value-quantity)",
    "special search parameters (Location near, _text, _content, _query, _filter)",
    "modifiers :above, :below, :in, :not-in and :of-type on token parameters",
    "modifiers :identifier, :above and :below on reference parameters",
    "unit conversion of quantities (UCUM canonical units): values match in the units they were stored in",
    "contained resources (_contained, _containedType) and references to contained resources (#id)",
    "_offset paging (pages are cut by keyset cursors: _cursor)",
    "_summary=true (count, data, text and false are supported)",
    "resolution of absolute references to other servers or other partitions",
)


def _documentation(ptype: str) -> str:
    modifiers = sorted(MODIFIERS.get(ptype, frozenset()))
    if ptype == "reference":
        modifiers.append("[type]")
    parts = [f"Modifiers: {', '.join(':' + m for m in modifiers)}." if modifiers else "No modifiers."]
    if ptype in _PREFIXED:
        parts.append(f"Prefixes: {', '.join(PREFIXES)}.")
    if ptype == "reference":
        parts.append("Chaining (name.param) supported; targets in this partition only.")
    return " ".join(parts)


def search_params_for(rtype: str, registry: SearchRegistry | None = None) -> list[dict[str, Any]]:
    """Return the CapabilityStatement searchParam entries of ``rtype`` (built-in, or of a registry)."""
    if registry is None:
        return [dict(entry) for entry in _builtin_params(rtype)]
    return _params(registry, rtype)


@cache
def _builtin_params(rtype: str) -> tuple[dict[str, Any], ...]:
    return tuple(_params(builtin_registry(), rtype))


def _params(registry: SearchRegistry, rtype: str) -> list[dict[str, Any]]:
    entries = []
    for code, (ptype, url, doc) in _RESOURCE_PARAMS.items():
        text = doc + (", ".join(PREFIXES) + "." if ptype == "date" else "")
        entries.append({"name": code, "definition": url, "type": ptype, "documentation": text})
    for code, param in sorted(registry.for_type(rtype).items()):
        if code in _RESOURCE_PARAMS or not param.searchable:
            continue
        entry: dict[str, Any] = {
            "name": code,
            "type": param.type,
            "documentation": _documentation(param.type),
        }
        if param.definition.url:
            entry["definition"] = param.definition.url
        entries.append(entry)
    return entries


@cache
def _unsupported_parameters() -> tuple[str, ...]:
    registry = builtin_registry()
    out = []
    for rtype in sorted(resource_types()):
        for code, param in sorted(registry.for_type(rtype).items()):
            if code not in _RESOURCE_PARAMS and not param.searchable:
                out.append(f"{rtype}:{code} ({param.type})")
    return tuple(out)


def search_limitations_extension() -> dict[str, Any]:
    """Return the extension that lists unsupported search features, result parameters and parameters."""
    parts: list[dict[str, Any]] = [{"url": "feature", "valueString": f} for f in UNSUPPORTED_FEATURES]
    parts.extend(
        {"url": "parameter", "valueString": name} for name in sorted(UNSUPPORTED_RESULT | UNSUPPORTED_SEARCH)
    )
    parts.extend({"url": "searchParameter", "valueString": p} for p in _unsupported_parameters())
    return {"url": LIMITATIONS_EXTENSION, "extension": parts}
