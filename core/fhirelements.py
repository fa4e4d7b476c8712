"""Top-level elements of R4 resources, and ``_elements`` subsetting that keeps the stored bytes.

The element lists are derived from the official R4 (4.0.1) StructureDefinitions: every top-level element of
each resource type, and those with a minimum cardinality of 1 (kept by every subset, as the spec asks).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import orjson

from core.fhirjson import dump_with

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


@cache
def _table() -> dict[str, dict[str, list[str]]]:
    text = resources.files("core").joinpath("data/elements.json").read_text("utf-8")
    table: dict[str, dict[str, list[str]]] = json.loads(text)
    return table


def element_names(rtype: str) -> frozenset[str]:
    """Return the top-level element names of ``rtype`` (choice elements without their ``[x]``)."""
    entry = _table().get(rtype)
    if entry is None:
        return frozenset()
    return frozenset(name.removesuffix("[x]") for name in entry["elements"])


def is_element_of_any_type(name: str) -> bool:
    """Return whether ``name`` is a top-level element of at least one resource type."""
    return any(name in element_names(rtype) for rtype in _table())


@cache
def _choices(rtype: str) -> frozenset[str]:
    entry = _table().get(rtype, {"elements": []})
    return frozenset(n[:-3] for n in entry["elements"] if n.endswith("[x]"))


@cache
def mandatory_elements(rtype: str) -> frozenset[str]:
    """Return the top-level elements of ``rtype`` with a minimum cardinality of 1."""
    entry = _table().get(rtype, {"required": []})
    return frozenset(name.removesuffix("[x]") for name in entry["required"])


def _base_name(rtype: str, key: str) -> str:
    name = key[1:] if key.startswith("_") else key
    for choice in _choices(rtype):
        if name.startswith(choice) and name[len(choice) : len(choice) + 1].isupper():
            return choice
    return name


def subset(raw: bytes, keep: frozenset[str]) -> bytes:
    """Return the stored resource ``raw`` with only the ``keep`` elements (plus mandatory ones), tagged.

    Every member that stays keeps its stored bytes; ``meta.tag`` gains SUBSETTED.
    """
    resource: dict[str, Any] = orjson.loads(raw)
    rtype = str(resource.get("resourceType", ""))
    kept = keep | mandatory_elements(rtype) | _ALWAYS
    drop = {key: None for key in resource if key not in _ALWAYS and _base_name(rtype, key) not in kept}
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if not (isinstance(t, dict) and t.get("code") == "SUBSETTED")]
    meta["tag"] = [*tags, SUBSETTED]
    return dump_with(raw, resource, id=resource.get("id"), meta=meta, **drop)
