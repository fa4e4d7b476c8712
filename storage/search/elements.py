"""R4 element types: which JSON keys a FHIRPath step reads, and the FHIR type of what it finds.

The table (``data/element_types.json``) maps a type context to its child elements. A context is a
resource or data type name (``Observation``, ``HumanName``) or the path of a backbone element
(``Observation.component``); a child's type is a type name or ``@`` + the context of a nested backbone
element. Choice elements keep their ``[x]`` suffix: ``value[x]`` of type ``Quantity`` is stored under the
JSON key ``valueQuantity``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from core.fhirtypes import resource_types

# Specialisations of Quantity: ``as Quantity`` also accepts these.
QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)


@cache
def _table() -> dict[str, Any]:
    text = resources.files("storage.search").joinpath("data/element_types.json").read_text("utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def context_of(type_name: str) -> str:
    """Return the element-table context of a type name (``@Observation.component`` -> that path)."""
    if type_name.startswith("@"):
        return type_name[1:]
    return str(_table()["aliases"].get(type_name, type_name))


def children(type_name: str, name: str) -> list[tuple[str, str]]:
    """Return the (JSON key, FHIR type) pairs a child step ``name`` reads from a value of ``type_name``.

    Unknown children give an empty list; a choice element gives one pair per allowed type.
    """
    members: dict[str, list[str]] = _table()["contexts"].get(context_of(type_name), {})
    if name in members:
        return [(name, t) for t in members[name]]
    choice = members.get(name + "[x]")
    if choice is None:
        return []
    return [(name + t[0].upper() + t[1:], t) for t in choice]


def is_type(actual: str, wanted: str) -> bool:
    """Return whether a value of type ``actual`` is a ``wanted`` (FHIRPath ``is`` / ``as`` / ``ofType``)."""
    if actual == wanted:
        return True
    if wanted == "Quantity":
        return actual in QUANTITY_TYPES
    return wanted in {"Resource", "DomainResource"} and actual in resource_types()
