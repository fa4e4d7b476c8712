"""JSON Patch (RFC 6902) over JSON Pointers (RFC 6901), applied to a parsed resource.

``parse_json_patch`` checks the document's shape (an array of operation objects with the members each
operation needs) and raises InvalidRequest (400) when it is malformed. ``apply_json_patch`` returns a patched
copy and raises Unprocessable (422) when an operation cannot apply: a path to nothing, a failed ``test``, an
array index out of range, or a change to the resource's ``resourceType`` or ``id``. Operations apply in order
and all or nothing (the input is never changed). Empty objects and arrays left behind are dropped, as FHIR
JSON has none (removing the last ``name`` leaves no ``"name": []``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from core.errors import InvalidRequest, Unprocessable

OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_FORBIDDEN = frozenset({("resourceType",), ("id",)})


@dataclass(frozen=True)
class JsonPatchOperation:
    """One operation of a JSON Patch document; ``path`` and ``source`` are split JSON Pointers."""

    op: str
    path: tuple[str, ...]
    pointer: str
    value: Any = None
    source: tuple[str, ...] | None = None


def split_pointer(pointer: str) -> tuple[str, ...]:
    """Return the reference tokens of a JSON Pointer (``""`` is the whole document), or raise."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise InvalidRequest(f"JSON Pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise InvalidRequest(f"JSON Pointer {pointer!r} has a '~' not followed by 0 or 1")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def parse_json_patch(document: Any) -> list[JsonPatchOperation]:
    """Read a JSON Patch document (a parsed JSON array), or raise InvalidRequest."""
    if not isinstance(document, list):
        raise InvalidRequest("A JSON Patch document is a JSON array of operations")
    if not document:
        raise InvalidRequest("The JSON Patch document has no operation")
    ops: list[JsonPatchOperation] = []
    for n, item in enumerate(document):
        where = f"operation {n}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"JSON Patch {where} is not an object")
        op, path = item.get("op"), item.get("path")
        if op not in OPERATIONS:
            raise InvalidRequest(f"JSON Patch {where}: op must be one of {', '.join(OPERATIONS)}, not {op!r}")
        if not isinstance(path, str):
            raise InvalidRequest(f"JSON Patch {where} ({op}) needs a string path")
        if op in {"add", "replace", "test"} and "value" not in item:
            raise InvalidRequest(f"JSON Patch {where} ({op} {path}) needs a value")
        source: tuple[str, ...] | None = None
        if op in {"move", "copy"}:
            if not isinstance(item.get("from"), str):
                raise InvalidRequest(f"JSON Patch {where} ({op} {path}) needs a string from")
            source = split_pointer(item["from"])
        ops.append(JsonPatchOperation(op, split_pointer(path), path, item.get("value"), source))
    return ops


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def _index(token: str, size: int, op: JsonPatchOperation, *, append: bool) -> int:
    """Return the array index a token names (``-`` is the end, allowed only where ``append``)."""
    if token == "-" and append:
        return size
    if not _INDEX.fullmatch(token):
        raise Unprocessable(f"{op.op} {op.pointer!r}: {token!r} is not an array index")
    index = int(token)
    if index > size or (index == size and not append):
        raise Unprocessable(f"{op.op} {op.pointer!r}: index {index} is out of range (size {size})")
    return index


def _get(document: Any, path: tuple[str, ...], op: JsonPatchOperation) -> Any:
    """Return the value at ``path``, or raise Unprocessable when there is none."""
    value = document
    for token in path:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list):
            value = value[_index(token, len(value), op, append=False)]
        else:
            raise Unprocessable(f"{op.op} {op.pointer!r}: the path names nothing in the resource")
    return value


def _parent(document: Any, path: tuple[str, ...], op: JsonPatchOperation) -> Any:
    if not path:
        raise Unprocessable(f"{op.op}: the whole resource cannot be replaced by a patch")
    if path in _FORBIDDEN:
        raise Unprocessable(f"{op.op} {op.pointer!r}: {path[0]} cannot be patched")
    parent = _get(document, path[:-1], op)
    if not isinstance(parent, dict | list):
        raise Unprocessable(f"{op.op} {op.pointer!r}: the parent is a primitive value")
    return parent


def _add(document: Any, path: tuple[str, ...], value: Any, op: JsonPatchOperation) -> None:
    parent = _parent(document, path, op)
    if isinstance(parent, list):
        parent.insert(_index(path[-1], len(parent), op, append=True), value)
    else:
        parent[path[-1]] = value


def _remove(document: Any, path: tuple[str, ...], op: JsonPatchOperation) -> Any:
    parent = _parent(document, path, op)
    if isinstance(parent, list):
        return parent.pop(_index(path[-1], len(parent), op, append=False))
    if path[-1] not in parent:
        raise Unprocessable(f"{op.op} {op.pointer!r}: the path names nothing in the resource")
    return parent.pop(path[-1])


def equal(left: Any, right: Any) -> bool:
    """Return whether two JSON values are equal as RFC 6902's ``test`` means it (``true`` is not ``1``)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(equal(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        for key in list(value):
            if _prune(value[key]) in ({}, []):
                del value[key]
    elif isinstance(value, list):
        value[:] = [item for item in value if _prune(item) not in ({}, [])]
    return value


def apply_json_patch(resource: dict[str, Any], ops: list[JsonPatchOperation]) -> dict[str, Any]:
    """Return a patched copy of ``resource``; raise Unprocessable when an operation cannot apply."""
    out: dict[str, Any] = _copy(resource)
    for op in ops:
        if op.op == "add":
            _add(out, op.path, _copy(op.value), op)
        elif op.op == "remove":
            _remove(out, op.path, op)
        elif op.op == "replace":
            _remove(out, op.path, op)
            _add(out, op.path, _copy(op.value), op)
        elif op.op == "move":
            assert op.source is not None
            if op.path[: len(op.source)] == op.source and op.path != op.source:
                raise Unprocessable(f"move {op.pointer!r}: a value cannot move into one of its own children")
            if op.path != op.source:
                _add(out, op.path, _remove(out, op.source, op), op)
        elif op.op == "copy":
            assert op.source is not None
            _add(out, op.path, _copy(_get(out, op.source, op)), op)
        elif not equal(_get(out, op.path, op), op.value):
            raise Unprocessable(f"test {op.pointer!r}: the resource does not hold the tested value")
    if out.get("resourceType") != resource.get("resourceType") or out.get("id") != resource.get("id"):
        raise Unprocessable("A patch cannot change the resource's resourceType or id")
    return _prune(out)  # type: ignore[no-any-return]


__all__ = [
    "OPERATIONS",
    "JsonPatchOperation",
    "apply_json_patch",
    "equal",
    "parse_json_patch",
    "split_pointer",
]
