"""Parse and validate ``$export`` kick-off parameters (GET query or POST Parameters) into an ExportSpec.

Rules (Bulk Data STU2, plus ``_until`` from STU3): values may be comma-joined and parameters repeated;
POST bodies are FHIR ``Parameters`` whose values may be any primitive ``value[x]`` (and ``valueReference``
for ``patient``, ``valueCoding`` for ``includeAssociatedData``). Unknown or unsupported parameters and values
are a 400, unless the client sent ``Prefer: handling=lenient``: then they are ignored and each becomes an
informational OperationOutcome in the manifest's ``error`` list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from core.errors import InvalidRequest, Issue
from core.exportspec import GROUP, NDJSON, OUTPUT_FORMATS, PATIENT, SYSTEM, ExportSpec, patient_compartment
from core.fhirdates import format_instant, parse_instant
from core.fhirelements import element_names, is_element_of_any_type
from core.fhirtypes import resource_types
from core.validation import ID_PATTERN

# Result-shaping and paging parameters may not appear in a _typeFilter query.
_RESULT_PARAMS = frozenset(
    {"_include", "_revinclude", "_sort", "_count", "_elements", "_summary", "_total", "_contained"}
    | {"_containedType", "_offset", "_format", "_pretty"}
)
_QUERY_START = re.compile(r",(?=[A-Z][A-Za-z]+\?)")
_ELEMENT = re.compile(r"(?:(?P<type>[A-Z][A-Za-z]+)\.)?(?P<name>[a-z][A-Za-z0-9]*)")
_PATIENT_REF = re.compile(r"(?:.*/)?Patient/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")
_IGNORED_QUIETLY = frozenset({"_format", "_pretty", "allowPartialManifests"})
_KNOWN = frozenset(
    {"_outputFormat", "_since", "_until", "_type", "_typeFilter", "_elements", "patient"}
    | {"includeAssociatedData", "organizeOutputBy"}
)
_PRIMITIVE_VALUES = (
    "valueString",
    "valueCode",
    "valueUri",
    "valueUrl",
    "valueCanonical",
    "valueId",
    "valueInstant",
    "valueDateTime",
    "valueDate",
    "valueTime",
    "valueBoolean",
    "valueInteger",
    "valueUnsignedInt",
    "valuePositiveInt",
    "valueDecimal",
    "valueOid",
    "valueUuid",
    "valueMarkdown",
    "valueBase64Binary",
)


def prefers(header: str | None) -> dict[str, str]:
    """Return the Prefer header's preferences as a dict (``respond-async`` maps to ``""``)."""
    out: dict[str, str] = {}
    for part in (header or "").split(","):
        for item in part.split(";"):
            key, _, value = item.strip().partition("=")
            if key:
                out[key.strip().lower()] = value.strip().strip('"').lower()
    return out


def body_parameters(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (name, value) pairs of a FHIR Parameters body, accepting any primitive value[x]."""
    if body.get("resourceType") != "Parameters":
        raise InvalidRequest("The body of a POST $export must be a FHIR Parameters resource")
    pairs: list[tuple[str, str]] = []
    for param in body.get("parameter") or []:
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise InvalidRequest("Each Parameters.parameter needs a name")
        name = param["name"]
        pairs.append((name, _value_text(name, param)))
    return pairs


def _value_text(name: str, param: dict[str, Any]) -> str:
    for key in _PRIMITIVE_VALUES:
        if key in param:
            value = param[key]
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)
    if isinstance(param.get("valueReference"), dict):
        ref = param["valueReference"].get("reference")
        if isinstance(ref, str):
            return ref
    if isinstance(param.get("valueCoding"), dict):
        code = param["valueCoding"].get("code")
        if isinstance(code, str):
            return code
    raise InvalidRequest(f"Parameter {name!r} has no primitive value[x], valueReference or valueCoding")


class _Parser:
    def __init__(self, level: str, lenient: bool):
        self.level = level
        self.lenient = lenient
        self.notes: list[str] = []

    def unsupported(self, message: str) -> None:
        if not self.lenient:
            raise InvalidRequest(message, issues=[Issue(message, code="not-supported")])
        self.notes.append(f"Ignored under handling=lenient: {message}")

    def allowed_types(self) -> frozenset[str]:
        if self.level == SYSTEM:
            return resource_types()
        return frozenset(patient_compartment()) | {"Patient"}

    def types(self, values: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for rtype in _split(values):
            if rtype not in resource_types():
                self.unsupported(f"_type names the unknown resource type {rtype!r}")
            elif rtype not in self.allowed_types():
                self.unsupported(
                    f"_type {rtype!r} is not in the Patient compartment, so a {self.level}-level export "
                    "cannot return it"
                )
            elif rtype not in out:
                out.append(rtype)
        if values and not out:
            raise InvalidRequest("_type leaves no resource type to export")
        return tuple(out)

    def type_filters(
        self, values: list[str], types: tuple[str, ...]
    ) -> dict[str, list[list[tuple[str, str]]]]:
        out: dict[str, list[list[tuple[str, str]]]] = {}
        for value in values:
            for query in _QUERY_START.split(value):
                rtype, sep, qs = query.partition("?")
                if not sep or rtype not in resource_types():
                    self.unsupported(f"_typeFilter {query!r} is not of the form Type?search-parameters")
                    continue
                if rtype not in self.allowed_types() or (types and rtype not in types):
                    self.unsupported(f"_typeFilter {query!r} names a type this export does not return")
                    continue
                pairs = parse_qsl(qs, keep_blank_values=True)
                if not pairs:
                    self.unsupported(f"_typeFilter {query!r} has no search parameters")
                    continue
                shaping = sorted({name for name, _ in pairs if name.split(":")[0] in _RESULT_PARAMS})
                if shaping:
                    raise InvalidRequest(f"_typeFilter {query!r} may not use {', '.join(shaping)}")
                out.setdefault(rtype, []).append(pairs)
        return out

    def elements(self, values: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in _split(values):
            m = _ELEMENT.fullmatch(item)
            rtype = m.group("type") if m else None
            name = m.group("name") if m else ""
            if m is None or (rtype is not None and rtype not in resource_types()):
                self.unsupported(f"_elements {item!r} is not of the form Type.element or element")
            elif rtype is not None and name not in element_names(rtype):
                self.unsupported(f"_elements {item!r}: {rtype} has no element {name!r}")
            elif rtype is None and not is_element_of_any_type(name):
                self.unsupported(f"_elements {item!r}: no resource type has an element {name!r}")
            else:
                out.setdefault(rtype or "*", [])
                if name not in out[rtype or "*"]:
                    out[rtype or "*"].append(name)
        return out

    def patients(self, values: list[str], method: str) -> tuple[str, ...]:
        if not values:
            return ()
        if self.level == SYSTEM:
            raise InvalidRequest("patient applies to Patient/$export and Group/[id]/$export only")
        if method != "POST":
            raise InvalidRequest("patient is accepted in a POST Parameters body only")
        out: list[str] = []
        for ref in _split(values):
            m = _PATIENT_REF.fullmatch(ref)
            if m is None:
                raise InvalidRequest(f"patient {ref!r} is not a reference to a Patient (Patient/[id])")
            if m.group("id") not in out:
                out.append(m.group("id"))
        return tuple(out)


def _split(values: Iterable[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _instant(name: str, values: list[str]) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"{name} may appear once")
    return format_instant(parse_instant(values[0].replace(" ", "+")))


def parse_export(
    pairs: list[tuple[str, str]],
    *,
    level: str,
    group_id: str | None = None,
    method: str = "GET",
    lenient: bool = False,
) -> ExportSpec:
    """Validate the kick-off parameters of an export at ``level``; raise InvalidRequest on a bad one."""
    if group_id is not None and not ID_PATTERN.fullmatch(group_id):
        raise InvalidRequest(f"Invalid Group id {group_id!r}")
    parser = _Parser(level, lenient)
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if name in _IGNORED_QUIETLY:
            continue
        if name not in _KNOWN:
            parser.unsupported(f"Unknown or unsupported $export parameter {name!r}")
            continue
        values.setdefault(name, []).append(value)
    formats = values.get("_outputFormat", [])
    if len(formats) > 1:
        raise InvalidRequest("_outputFormat may appear once")
    if formats and formats[0].strip().lower() not in OUTPUT_FORMATS:
        raise InvalidRequest(
            f"_outputFormat {formats[0]!r} is not supported; use application/fhir+ndjson",
            issues=[Issue(f"_outputFormat {formats[0]!r} is not supported", code="not-supported")],
        )
    since = _instant("_since", values.get("_since", []))
    until = _instant("_until", values.get("_until", []))
    if since and until and parse_instant(until) <= parse_instant(since):
        raise InvalidRequest("_until must be later than _since")
    types = parser.types(values.get("_type", []))
    filters = parser.type_filters(values.get("_typeFilter", []), types)
    elements = parser.elements(values.get("_elements", []))
    patients = parser.patients(values.get("patient", []), method)
    for code in _split(values.get("includeAssociatedData", [])):
        parser.unsupported(f"includeAssociatedData {code!r} is not supported")
    for value in values.get("organizeOutputBy", []):
        parser.unsupported(f"organizeOutputBy {value!r} is not supported")
    return ExportSpec(
        level=level if level in (SYSTEM, PATIENT, GROUP) else SYSTEM,
        group_id=group_id,
        output_format=NDJSON,
        since=since,
        until=until,
        types=types,
        type_filters=filters,
        elements=elements,
        patients=patients,
        notes=tuple(parser.notes),
    )
