"""FHIRPath Patch: a ``Parameters`` body of operations applied to a parsed resource.

Operations (``type``): ``add``, ``insert``, ``delete``, ``replace``, ``move`` from the FHIR specification,
and ``upsert``. The rules Bulkhead applies:

- ``replace``: the path selects exactly one element; it takes the new value.
- ``delete``: the path selects at most one element; nothing selected is not an error.
- ``add``: the path selects one element; ``name`` is added to it. A repeating element gets the value appended;
  a single element may be added only when absent.
- ``insert``: the path names a list (its last step is a member name); the value goes in at ``index``
  (0 … length).
- ``move``: the path names a list; the item at ``source`` moves to ``destination``.
- ``upsert``: like ``add``, except that a single element already present is replaced, and a repeating
  element does not get a second copy of an item equal to the value (so a repeated bulk update adds a tag
  once).

Values come from ``value[x]`` (any data type) or, for anonymous elements such as ``Patient.contact``, from
``value`` parts that each carry a ``name`` and a ``value[x]``. A choice element is added by its short name
(``name = value`` with ``valueQuantity``). ``resourceType`` and ``id`` cannot be patched. Empty objects and
lists left behind by a delete are removed, since FHIR JSON forbids them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from core.errors import InvalidRequest, Unprocessable
from core.fhirdates import format_instant
from core.fhirjson import dump_with
from core.fhirpath_nav import ElementInfo, Node, child_info, choice_names, is_primitive, navigate, split_path

TYPES = ("add", "insert", "delete", "replace", "move", "upsert")
_NEEDS = {
    "add": ("name", "value"),
    "insert": ("value", "index"),
    "delete": (),
    "replace": ("value",),
    "move": ("source", "destination"),
    "upsert": ("name", "value"),
}
_FORBIDDEN_ROOT = frozenset({"resourceType", "id"})


def _copy(value: Any) -> Any:
    """Return a deep copy of JSON data (an orjson round trip: many times faster than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(value))


@dataclass(frozen=True)
class PatchValue:
    """A value to put into a resource: its JSON form, and the data type its ``value[x]`` named."""

    json: Any
    type: str | None


@dataclass(frozen=True)
class PatchOperation:
    """One operation of a FHIRPath Patch."""

    type: str
    path: str
    name: str | None = None
    value: PatchValue | None = None
    index: int | None = None
    source: int | None = None
    destination: int | None = None


def _value_of(part: dict[str, Any], where: str) -> PatchValue:
    keys = [k for k in part if k.startswith("value") and len(k) > 5]
    if len(keys) > 1:
        raise InvalidRequest(f"{where} has more than one value[x]")
    if keys:
        return PatchValue(part[keys[0]], _type_code(keys[0][5:]))
    parts = part.get("part")
    if isinstance(parts, list) and parts:
        obj: dict[str, Any] = {}
        for sub in parts:
            if not isinstance(sub, dict) or not isinstance(sub.get("name"), str):
                raise InvalidRequest(f"Each part of {where} needs a name")
            inner = _value_of(sub, f"{where}.{sub['name']}")
            key = sub["name"]
            if key in obj:
                existing = obj[key]
                obj[key] = [*existing, inner.json] if isinstance(existing, list) else [existing, inner.json]
            else:
                obj[key] = inner.json
        return PatchValue(obj, None)
    raise InvalidRequest(f"{where} has no value[x] and no parts")


_PRIMITIVES = frozenset(
    {"boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary", "instant", "date"}
    | {"dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt", "positiveInt", "uuid"}
)


def _type_code(suffix: str) -> str:
    """Return the FHIR type code a ``value[x]`` suffix names (``DateTime`` → ``dateTime``)."""
    lowered = suffix[:1].lower() + suffix[1:]
    return lowered if lowered in _PRIMITIVES else suffix


def _int(part: dict[str, Any], where: str) -> int:
    for key in ("valueInteger", "valueUnsignedInt", "valuePositiveInt", "valueDecimal", "valueString"):
        if key in part:
            raw = part[key]
            if isinstance(raw, bool):
                break
            if isinstance(raw, int) or (isinstance(raw, str) and raw.strip().lstrip("-").isdigit()):
                return int(raw)
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
    raise InvalidRequest(f"{where} must be an integer")


def _str(part: dict[str, Any], where: str) -> str:
    for key, value in part.items():
        if key.startswith("value") and isinstance(value, str):
            return value
    raise InvalidRequest(f"{where} must be a string value")


def parse_patch(body: dict[str, Any]) -> list[PatchOperation]:
    """Read the operations of a FHIRPath Patch ``Parameters`` body, or raise InvalidRequest."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("A FHIRPath Patch is a Parameters resource")
    params = body.get("parameter")
    if not isinstance(params, list) or not params:
        raise InvalidRequest("The patch has no operation")
    ops: list[PatchOperation] = []
    for n, param in enumerate(params):
        where = f"Parameters.parameter[{n}]"
        if not isinstance(param, dict) or param.get("name") != "operation":
            raise InvalidRequest(f"{where} must be named 'operation'")
        parts: dict[str, dict[str, Any]] = {}
        for part in param.get("part") or []:
            if not isinstance(part, dict) or not isinstance(part.get("name"), str):
                raise InvalidRequest(f"Each part of {where} needs a name")
            if part["name"] in parts:
                raise InvalidRequest(f"{where} repeats the part {part['name']!r}")
            parts[part["name"]] = part
        unknown = set(parts) - {"type", "path", "name", "value", "index", "source", "destination"}
        if unknown:
            raise InvalidRequest(f"{where} has unknown parts: {', '.join(sorted(unknown))}")
        if "type" not in parts or "path" not in parts:
            raise InvalidRequest(f"{where} needs a type and a path")
        kind = _str(parts["type"], f"{where}.type")
        if kind not in TYPES:
            raise InvalidRequest(f"{where}: unknown operation type {kind!r}; use one of {', '.join(TYPES)}")
        missing = [p for p in _NEEDS[kind] if p not in parts]
        if missing:
            raise InvalidRequest(f"{where}: a {kind} needs {', '.join(missing)}")
        path = _str(parts["path"], f"{where}.path")
        split_path(path)  # syntax check now, not once per resource
        op = PatchOperation(
            type=kind,
            path=path,
            name=_str(parts["name"], f"{where}.name")
            if "name" in parts and kind in {"add", "upsert"}
            else None,
            value=_value_of(parts["value"], f"{where}.value")
            if "value" in parts and kind not in {"delete", "move"}
            else None,
            index=_int(parts["index"], f"{where}.index") if kind == "insert" else None,
            source=_int(parts["source"], f"{where}.source") if kind == "move" else None,
            destination=_int(parts["destination"], f"{where}.destination") if kind == "move" else None,
        )
        if op.name is not None and not op.name.isidentifier():
            raise InvalidRequest(f"{where}: invalid element name {op.name!r}")
        ops.append(op)
    return ops


def _one(nodes: list[Node], op: PatchOperation) -> Node:
    if not nodes:
        raise Unprocessable(f"{op.type} {op.path!r}: the path selects no element")
    if len(nodes) > 1:
        raise Unprocessable(f"{op.type} {op.path!r}: the path selects {len(nodes)} elements, not one")
    return nodes[0]


def _check_type(info: ElementInfo, value: PatchValue, op: PatchOperation) -> None:
    if not info.types or info.types == ("Resource",):
        return
    primitive = is_primitive(info.types)
    if primitive and isinstance(value.json, dict | list):
        raise Unprocessable(f"{op.type} {op.path!r}: {info.path} takes a primitive value, not an object")
    if not primitive and not any(t[:1].islower() for t in info.types) and not isinstance(value.json, dict):
        raise Unprocessable(f"{op.type} {op.path!r}: {info.path} takes an object, not {value.json!r}")


def _target(parent: Node, name: str, value: PatchValue, op: PatchOperation) -> tuple[str, ElementInfo]:
    """Return the member name and definition under which ``value`` goes into ``parent`` as ``name``."""
    found = child_info(parent.info, parent.concrete, name)
    if found is not None:
        return name, found[0]
    choices = choice_names(parent.info, parent.concrete, name)
    if choices is not None:
        for member, typ in choices:
            if value.type is not None and typ.lower() == value.type.lower():
                info = child_info(parent.info, parent.concrete, member)
                assert info is not None
                return member, info[0]
        raise Unprocessable(
            f"{op.type}: {parent.info.path}.{name}[x] cannot hold a {value.type or 'value without a type'}"
        )
    raise Unprocessable(f"{op.type}: {parent.info.path} has no element {name!r}")


def _add(resource: dict[str, Any], op: PatchOperation, *, upsert: bool) -> None:
    assert op.name is not None and op.value is not None
    parent = _one(navigate(resource, op.path), op)
    if not isinstance(parent.value, dict):
        raise Unprocessable(f"{op.type} {op.path!r}: the path selects a primitive, which has no elements")
    if parent.holder is None and op.name in _FORBIDDEN_ROOT:
        raise Unprocessable(f"{op.type}: {op.name} cannot be patched")
    member, info = _target(parent, op.name, op.value, op)
    _check_type(info, op.value, op)
    value = _copy(op.value.json)
    current = parent.value.get(member)
    if info.many:
        items = current if isinstance(current, list) else ([] if current is None else [current])
        if not (upsert and value in items):
            items.append(value)
        parent.value[member] = items
        return
    if current is not None and not upsert:
        raise Unprocessable(f"add {op.path!r}: {member} exists already; use replace or upsert")
    parent.value[member] = value


def _list_of(
    resource: dict[str, Any], op: PatchOperation
) -> tuple[dict[str, Any], str, list[Any], ElementInfo]:
    steps = split_path(op.path)
    last = steps[-1]
    if not last.replace("_", "a").isalnum():
        raise Unprocessable(f"{op.type} {op.path!r}: the path must end with the name of a list element")
    parent_path = ".".join(steps[:-1]) or str(resource.get("resourceType"))
    parent = _one(navigate(resource, parent_path), op)
    if not isinstance(parent.value, dict):
        raise Unprocessable(f"{op.type} {op.path!r}: the path does not name a list")
    found = child_info(parent.info, parent.concrete, last)
    if found is None or not found[0].many:
        raise Unprocessable(f"{op.type} {op.path!r}: {last} is not a repeating element")
    items = parent.value.get(last)
    if items is not None and not isinstance(items, list):
        raise Unprocessable(f"{op.type} {op.path!r}: {last} is not a list in this resource")
    return parent.value, last, items if items is not None else [], found[0]


def _insert(resource: dict[str, Any], op: PatchOperation) -> None:
    assert op.value is not None and op.index is not None
    holder, key, items, info = _list_of(resource, op)
    if not 0 <= op.index <= len(items):
        raise Unprocessable(f"insert {op.path!r}: index {op.index} is outside 0..{len(items)}")
    _check_type(info, op.value, op)
    items.insert(op.index, _copy(op.value.json))
    holder[key] = items


def _move(resource: dict[str, Any], op: PatchOperation) -> None:
    assert op.source is not None and op.destination is not None
    _holder, _key, items, _info = _list_of(resource, op)
    if not (0 <= op.source < len(items) and 0 <= op.destination < len(items)):
        raise Unprocessable(f"move {op.path!r}: source and destination must be within 0..{len(items) - 1}")
    items.insert(op.destination, items.pop(op.source))


def _prune(value: Any) -> Any:
    """Drop empty objects and lists (FHIR JSON has none), bottom-up."""
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _prune(value[key])
            if value[key] in ({}, []):
                del value[key]
    elif isinstance(value, list):
        value[:] = [item for item in (_prune(v) for v in value) if item not in ({}, [])]
    return value


def apply_patch(resource: dict[str, Any], ops: list[PatchOperation]) -> dict[str, Any]:
    """Return a patched copy of ``resource``; raise Unprocessable when an operation cannot apply."""
    out: dict[str, Any] = _copy(resource)
    rtype, rid = out.get("resourceType"), out.get("id")
    for op in ops:
        if op.type in {"add", "upsert"}:
            _add(out, op, upsert=op.type == "upsert")
        elif op.type == "insert":
            _insert(out, op)
        elif op.type == "move":
            _move(out, op)
        elif op.type == "delete":
            nodes = navigate(out, op.path)
            if len(nodes) > 1:
                raise Unprocessable(f"delete {op.path!r}: the path selects {len(nodes)} elements, not one")
            if nodes:
                _guard(nodes[0], op)
                nodes[0].remove()
        else:  # replace
            assert op.value is not None
            node = _one(navigate(out, op.path), op)
            _guard(node, op)
            _check_type(node.info, op.value, op)
            node.set(_copy(op.value.json))
        if out.get("resourceType") != rtype or out.get("id") != rid:
            raise Unprocessable(f"{op.type} {op.path!r}: resourceType and id cannot be patched")
    if any(op.type == "delete" for op in ops):
        _prune(out)  # only a delete can leave an empty object or list behind
    return out


def _guard(node: Node, op: PatchOperation) -> None:
    if node.holder is None:
        raise Unprocessable(f"{op.type} {op.path!r}: the resource itself cannot be patched")
    if node.key in _FORBIDDEN_ROOT and node.info.path.count(".") == 1:
        raise Unprocessable(f"{op.type} {op.path!r}: {node.key} cannot be patched")


def patched_bytes(
    raw: bytes, before: dict[str, Any], after: dict[str, Any], version: int, when: datetime
) -> bytes:
    """Return the stored form of a patched resource: members the patch left alone keep their stored bytes."""
    meta = dict(after.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(when)
    top: dict[str, Any] = {"id": after.get("id"), "meta": meta}
    for key, value in after.items():
        if key not in ("resourceType", "id", "meta") and before.get(key) != value:
            top[key] = value
    for key in before:
        if key not in after:
            top[key] = None
    return dump_with(raw, before, **top)
