"""What a bulk export asks for: the validated request stored as the export job's definition."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import Any

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
SYSTEM, PATIENT, GROUP = "system", "patient", "group"


@cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Return the R4 Patient compartment: resource type -> search parameters linking it to a patient."""
    text = resources.files("core").joinpath("data/patient_compartment.json").read_text("utf-8")
    return {rtype: tuple(params) for rtype, params in json.loads(text).items()}


@dataclass(frozen=True)
class ExportSpec:
    """A validated ``$export`` request, independent of how it arrived (GET query or POST Parameters).

    ``types`` empty means every type the level allows. ``type_filters`` maps a type to its ``_typeFilter``
    queries (each a list of (name, value) pairs), OR-ed. ``elements`` maps a type (or ``"*"``) to the
    top-level elements to keep. ``patients`` are ids of Patient resources of the partition. ``notes`` are
    informational messages (ignored parameters under lenient handling) that go to the manifest's ``error``.
    """

    level: str = SYSTEM
    group_id: str | None = None
    output_format: str = NDJSON
    since: str | None = None
    until: str | None = None
    types: tuple[str, ...] = ()
    type_filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    elements: dict[str, list[str]] = field(default_factory=dict)
    patients: tuple[str, ...] = ()
    include_associated_data: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored as the job's definition."""
        data = asdict(self)
        data["type_filters"] = {
            rtype: [[list(pair) for pair in query] for query in queries]
            for rtype, queries in self.type_filters.items()
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportSpec:
        """Rebuild a spec from its stored JSON form."""
        return cls(
            level=data.get("level", SYSTEM),
            group_id=data.get("group_id"),
            output_format=data.get("output_format", NDJSON),
            since=data.get("since"),
            until=data.get("until"),
            types=tuple(data.get("types") or ()),
            type_filters={
                rtype: [[(str(p[0]), str(p[1])) for p in query] for query in queries]
                for rtype, queries in (data.get("type_filters") or {}).items()
            },
            elements={k: list(v) for k, v in (data.get("elements") or {}).items()},
            patients=tuple(data.get("patients") or ()),
            include_associated_data=tuple(data.get("include_associated_data") or ()),
            notes=tuple(data.get("notes") or ()),
        )

    def elements_for(self, rtype: str) -> frozenset[str] | None:
        """Return the elements to keep for ``rtype``, or None when ``_elements`` does not trim it."""
        if not self.elements:
            return None
        keep = set(self.elements.get("*", ())) | set(self.elements.get(rtype, ()))
        if not keep:
            return None
        return frozenset(keep)
