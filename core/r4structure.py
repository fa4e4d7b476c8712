"""Check a FHIR JSON resource against the R4 (4.0.1) definitions, fast and without a model.

The definitions are a compact table built from the official R4 StructureDefinitions, ValueSets and
CodeSystems by ``tools/build_r4_validation_data.py`` (``core/data/r4_validation.json.gz``). The walk checks
what the JSON form of R4 requires: known members only, arrays where the cardinality is ``*`` and single values
elsewhere, required elements, one variant per choice element, the JSON kind and lexical form of every
primitive, primitive extensions (``_given``) aligned with their values, no ``null``, empty object, empty array
or empty string, the codes of required bindings that can be enumerated, and nested resources (``contained``,
``Bundle.entry.resource``, ``Parameters.parameter.resource``) each by its own type.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from core.errors import Issue

MAX_ISSUES = 100
MAX_STRING = 1024 * 1024
# Objects nested deeper than this are refused: the deepest official R4 example nests 12 objects, and
# serialisers (orjson stops at 254 levels) and recursive validators need a bound.
MAX_DEPTH = 64
_INT32 = 2**31 - 1


PRIMITIVE, COMPLEX, RESOURCE = 0, 1, 2
_NUMERIC = frozenset({"boolean", "integer", "unsignedInt", "positiveInt", "decimal"})


class Element(NamedTuple):
    """One JSON member of a type: its element name, type, whether it repeats, and how it is checked."""

    name: str
    type: str
    many: bool
    extensible: bool
    codes: frozenset[str] | None
    kind: int
    text: bool


def _element(spec: list[Any], codes: frozenset[str] | None) -> Element:
    ftype = spec[1]
    primitive = ftype[0].islower()
    return Element(
        name=spec[0],
        type=ftype,
        many=bool(spec[2]),
        extensible=len(spec) < 4 and primitive and ftype != "xhtml",
        codes=codes,
        kind=PRIMITIVE if primitive else RESOURCE if ftype == "Resource" else COMPLEX,
        text=primitive and ftype not in _NUMERIC,
    )


class TypeDef(NamedTuple):
    """The members of one resource, data type or backbone element."""

    members: dict[str, Element]
    required: tuple[str, ...]
    choices: frozenset[str]


@dataclass(frozen=True)
class Definitions:
    """The R4 definitions the walk uses."""

    types: dict[str, TypeDef]
    resources: frozenset[str]
    r4b_differing: frozenset[str]


@cache
def definitions() -> Definitions:
    """Load the R4 definitions shipped with Bulkhead (once per process)."""
    blob = resources.files("core").joinpath("data/r4_validation.json.gz").read_bytes()
    data = json.loads(gzip.decompress(blob))
    codes = [frozenset(c) for c in data["valuesets"]["codes"]]
    types: dict[str, TypeDef] = {}
    for name, table in data["types"].items():
        bound = table.get("b", {})
        members = {
            key: _element(spec, codes[bound[spec[0]]] if spec[0] in bound and spec[1] == "code" else None)
            for key, spec in table["e"].items()
        }
        types[name] = TypeDef(members, tuple(table["r"]), frozenset(table["c"]))
    return Definitions(
        types=types,
        resources=frozenset(data["resources"]),
        r4b_differing=frozenset(data["r4b"]["differing"]),
    )


_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "code": re.compile(r"[^ \t\r\n]+([ \t\r\n][^ \t\r\n]+)*"),
    "id": re.compile(r"[A-Za-z0-9\-.]{1,64}"),
    "uri": re.compile(r"[^ \t\r\n]+"),
    "url": re.compile(r"[^ \t\r\n]+"),
    "canonical": re.compile(r"[^ \t\r\n]+"),
    "oid": re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+"),
    "uuid": re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "date": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?"),
    "dateTime": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?"),
    "instant": re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}"),
    "time": re.compile(_TIME),
    "base64Binary": re.compile(r"[A-Za-z0-9+/= \t\r\n]+"),
}
_INTEGERS = {"integer": -(2**31), "unsignedInt": 0, "positiveInt": 1}
_STRINGS = frozenset({"string", "markdown", "xhtml", *_PATTERNS})


@dataclass
class Walk:
    """The state of one validation: the issues found and the nested resources met on the way."""

    issues: list[Issue] = field(default_factory=list)
    nested: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    truncated: int = 0

    def add(self, where: str, text: str, code: str = "structure") -> None:
        """Record one problem at ``where``."""
        if len(self.issues) >= MAX_ISSUES:
            self.truncated += 1
            return
        self.issues.append(Issue(f"{where}: {text}", code=code, expression=(where,)))


def _describe(value: Any) -> str:
    text = (
        json.dumps(value, ensure_ascii=False) if not isinstance(value, dict | list) else type(value).__name__
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _at(where: str, key: str, index: int | None) -> str:
    return f"{where}.{key}" if index is None else f"{where}.{key}[{index}]"


def _primitive(walk: Walk, value: Any, element: Element, where: str, key: str, index: int | None) -> None:
    """Check one primitive value; its location is only spelled out when there is a problem."""
    ftype = element.type
    if element.text:
        if type(value) is not str:
            walk.add(_at(where, key, index), f"expected a JSON string ({ftype}), got {_describe(value)}")
            return
        if not value:
            walk.add(_at(where, key, index), "empty strings are not allowed; leave the element out")
        elif "\x00" in value:
            walk.add(_at(where, key, index), "the character U+0000 (NUL) is not allowed", code="value")
        elif len(value) > MAX_STRING and ftype in {"string", "markdown"}:
            walk.add(_at(where, key, index), f"the {ftype} is longer than 1 MiB")
        elif (pattern := _PATTERNS.get(ftype)) is not None and not pattern.fullmatch(value):
            walk.add(_at(where, key, index), f"{_describe(value)} is not a valid {ftype}", code="value")
        elif ftype == "xhtml" and not value.lstrip().startswith("<div"):
            walk.add(_at(where, key, index), "the narrative must be an XHTML <div> element", code="value")
        elif element.codes is not None and value not in element.codes:
            text = f"unknown code {_describe(value)} (required binding)"
            walk.add(_at(where, key, index), text, code="code-invalid")
        return
    if ftype == "boolean":
        if type(value) is not bool:
            walk.add(_at(where, key, index), f"expected a JSON boolean, got {_describe(value)}")
    elif ftype == "decimal":
        if type(value) not in (int, float):
            walk.add(_at(where, key, index), f"expected a JSON number (decimal), got {_describe(value)}")
    elif type(value) is not int:
        walk.add(_at(where, key, index), f"expected a JSON integer ({ftype}), got {_describe(value)}")
    elif not _INTEGERS[ftype] <= value <= _INT32:
        walk.add(_at(where, key, index), f"{value} is out of range for {ftype}")


def _value(walk: Walk, value: Any, element: Element, where: str, in_contained: bool, depth: int) -> None:
    """Check one value of a complex or resource element at ``where``."""
    if value is None:
        walk.add(where, "null is not allowed; leave the element out")
    elif element.kind == RESOURCE:
        if not isinstance(value, dict):
            walk.add(where, "expected a resource (a JSON object)")
            return
        if element.name == "contained" and in_contained:
            walk.add(where, "a contained resource cannot contain resources")
            return
        contained = element.name == "contained" or in_contained
        resource_issues(value, where, walk, in_contained=contained, depth=depth + 1)
    elif type(value) is not dict:
        walk.add(where, f"expected a JSON object ({element.type}), got {_describe(value)}")
    else:
        _complex(walk, value, element.type, where, in_contained, depth + 1)


def _extensions(walk: Walk, value: Any, where: str, in_contained: bool, depth: int) -> bool:
    """Check a primitive's extension object (``_given``); return whether it is present."""
    if value is None:
        return False
    if not isinstance(value, dict):
        walk.add(where, "a primitive extension must be a JSON object")
        return True
    _complex(walk, value, "Element", where, in_contained, depth + 1)
    return True


def _primitive_extension(
    walk: Walk, obj: dict[str, Any], key: str, element: Element, where: str, in_contained: bool, depth: int
) -> None:
    ext = obj[key]
    values = obj.get(key[1:])
    if not element.many:
        if ext is None:
            walk.add(where, "null is not allowed; leave the element out")
        else:
            _extensions(walk, ext, where, in_contained, depth)
        return
    if not isinstance(ext, list):
        walk.add(where, "expected an array (the element repeats)")
        return
    if not ext:
        walk.add(where, "empty arrays are not allowed; leave the element out")
    if isinstance(values, list) and len(values) != len(ext):
        walk.add(where, f"has {len(ext)} items but {key[1:]} has {len(values)}; they must align")
    present = [_extensions(walk, item, f"{where}[{i}]", in_contained, depth) for i, item in enumerate(ext)]
    if not any(present):
        walk.add(where, "an array of nulls is not allowed; leave the element out")


def _other_member(
    walk: Walk,
    obj: dict[str, Any],
    key: str,
    typedef: TypeDef,
    tname: str,
    where: str,
    in_contained: bool,
    depth: int,
    present: dict[str, str],
) -> None:
    """Check a member that is not an element: a primitive's extension (``_given``) or ``resourceType``."""
    here = f"{where}.{key}"
    base = typedef.members.get(key[1:]) if key.startswith("_") else None
    if base is not None and base.extensible:
        _primitive_extension(walk, obj, key, base, here, in_contained, depth)
        present.setdefault(base.name, key[1:])
    elif key != "resourceType" or tname not in definitions().resources:
        walk.add(here, f"unknown element for {tname}")


def _complex(walk: Walk, obj: dict[str, Any], tname: str, where: str, in_contained: bool, depth: int) -> None:
    if depth > MAX_DEPTH:
        walk.add(where, f"elements are nested more than {MAX_DEPTH} levels deep", code="too-costly")
        return
    typedef = definitions().types.get(tname)
    if typedef is None:
        walk.add(where, f"no definition for the type {tname}", code="not-supported")
        return
    if not obj:
        walk.add(where, "empty objects are not allowed; leave the element out")
        return
    members = typedef.members
    choices = typedef.choices
    present: dict[str, str] = {}
    for key, value in obj.items():
        element = members.get(key)
        if element is None:
            _other_member(walk, obj, key, typedef, tname, where, in_contained, depth, present)
            continue
        name = element.name
        if choices and name in choices:
            other = present.get(name)
            if other is not None and other != key:
                text = f"only one of the choices of {name} may be present (also {other})"
                walk.add(f"{where}.{key}", text)
        present[name] = key
        primitive = element.kind == PRIMITIVE
        if element.many:
            if type(value) is not list:
                walk.add(f"{where}.{key}", f"expected an array (the element repeats), got {_describe(value)}")
            elif not value:
                walk.add(f"{where}.{key}", "empty arrays are not allowed; leave the element out")
            elif primitive:
                ext = obj.get("_" + key) if element.extensible else None
                for i, item in enumerate(value):
                    if item is not None:
                        _primitive(walk, item, element, where, key, i)
                    elif not (isinstance(ext, list) and i < len(ext) and ext[i] is not None):
                        walk.add(f"{where}.{key}[{i}]", "null is not allowed; leave the element out")
            else:
                here = f"{where}.{key}"
                for i, item in enumerate(value):
                    _value(walk, item, element, f"{here}[{i}]", in_contained, depth)
                if element.kind == RESOURCE:
                    walk.nested.extend((f"{here}[{i}]", r) for i, r in enumerate(value) if type(r) is dict)
        elif type(value) is list:
            walk.add(f"{where}.{key}", "expected a single value, not an array")
        elif primitive:
            if value is None:
                walk.add(f"{where}.{key}", "null is not allowed; leave the element out")
            else:
                _primitive(walk, value, element, where, key, None)
        else:
            here = f"{where}.{key}"
            _value(walk, value, element, here, in_contained, depth)
            if element.kind == RESOURCE and type(value) is dict:
                walk.nested.append((here, value))
    for name in typedef.required:
        if name not in present:
            walk.add(f"{where}.{name}", f"the required element {name} is missing", code="required")


def resource_issues(
    resource: dict[str, Any], where: str | None, walk: Walk, *, in_contained: bool = False, depth: int = 0
) -> None:
    """Walk one resource (top level or nested at ``where``) and record its problems in ``walk``."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        walk.add(where or "resourceType", "the resource has no resourceType", code="required")
        return
    if rtype not in definitions().resources:
        walk.add(where or "resourceType", f"unknown resourceType {_describe(rtype)}", code="not-supported")
        return
    _complex(walk, resource, rtype, where or rtype, in_contained, depth)


def walk_resource(resource: dict[str, Any]) -> Walk:
    """Return the structural problems of ``resource`` and the resources nested in it."""
    walk = Walk()
    resource_issues(resource, None, walk)
    if walk.truncated:
        walk.issues.append(
            Issue(f"{walk.truncated} more problems were not listed", code="too-costly", severity="warning")
        )
    return walk


__all__ = ["Definitions", "Walk", "definitions", "walk_resource"]
