"""Navigate a parsed FHIR resource along a FHIRPath path, keeping where each element lives.

FHIRPath Patch needs more than the values a path selects: it needs their places (the object and member,
and the list position) to replace, delete or insert there. ``navigate`` walks the subset of FHIRPath that
patch paths use — member names (choice elements by their short name: ``Observation.value``), ``[n]``,
``first()``, ``last()``, ``tail()``, ``single()``, ``ofType(T)``, ``extension('url')`` and
``where(criteria)`` — and evaluates the ``where`` criteria with fhirpathpy on each candidate element, within
the limits on tenants' FHIRPath (``core/fhirpath_limits.py``: refused expressions, RE2 regexes, a CPU budget
per evaluation; refused or over budget is 422).

Element cardinalities and types come from ``core/data/element_types.json.gz``, derived from the snapshots of
the official R4 (4.0.1) StructureDefinitions of every resource and complex data type: for each element path
whether it repeats, its type codes and its content reference.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from core.errors import InvalidRequest, Unprocessable
from core.fhirpath_guard import TooCostly, compile_bounded
from core.fhirpath_limits import PER_EVALUATION_SECONDS, expression_problems

_CONTAINERS = frozenset({"BackboneElement", "Element"})


@dataclass(frozen=True)
class ElementInfo:
    """What the R4 definitions say about one element: its path, whether it repeats, its types."""

    path: str
    many: bool
    types: tuple[str, ...]


@cache
def _table() -> dict[str, tuple[bool, tuple[str, ...], str | None]]:
    data = resources.files("core").joinpath("data/element_types.json.gz").read_bytes()
    raw: dict[str, list[Any]] = json.loads(gzip.decompress(data))
    return {path: (bool(v[0]), tuple(v[1]), v[2]) for path, v in raw.items()}


def _base(info: ElementInfo, concrete: str | None) -> str:
    """Return the path under which the children of an element are defined."""
    kind = concrete or (info.types[0] if len(info.types) == 1 else None)
    if kind is None or kind in _CONTAINERS:
        return info.path
    return kind


def child_info(parent: ElementInfo, concrete: str | None, name: str) -> tuple[ElementInfo, str | None] | None:
    """Return the definition of child ``name`` (and the type a choice name fixes), or None if unknown.

    ``concrete`` is the parent's actual type when the parent is a choice or a Resource.
    """
    table = _table()
    base = _base(parent, concrete)
    for path in (f"{base}.{name}", f"{parent.path}.{name}"):
        entry = table.get(path)
        if entry is not None:
            many, types, ref = entry
            if ref is not None:
                ref_entry = table.get(ref)
                if ref_entry is not None:
                    return ElementInfo(ref, many, ref_entry[1]), None
            return ElementInfo(path, many, types), None
    for cut in range(len(name) - 1, 0, -1):
        if name[cut].isupper():
            entry = table.get(f"{base}.{name[:cut]}[x]")
            if entry is not None:
                typ = name[cut:]
                matching = [t for t in entry[1] if t[0].upper() + t[1:] == typ]
                if matching:
                    return ElementInfo(f"{base}.{name[:cut]}[x]", entry[0], entry[1]), matching[0]
    return None


def choice_names(parent: ElementInfo, concrete: str | None, name: str) -> list[tuple[str, str]] | None:
    """Return (member name, type) for each type of choice element ``name`` (``value`` → ``valueQuantity``)."""
    entry = _table().get(f"{_base(parent, concrete)}.{name}[x]")
    if entry is None:
        return None
    return [(name + t[0].upper() + t[1:], t) for t in entry[1]]


def root_info(resource_type: str) -> ElementInfo:
    """Return the definition of a resource's root element."""
    return ElementInfo(resource_type, False, (resource_type,))


def is_primitive(types: tuple[str, ...]) -> bool:
    """Return whether every type of an element is a FHIR primitive (lower-case type codes)."""
    return bool(types) and all(t[:1].islower() for t in types)


@dataclass
class Node:
    """One element a path selected: its value and its place (``holder[key]`` or ``holder[key][index]``)."""

    value: Any
    holder: dict[str, Any] | None
    key: str | None
    index: int | None
    info: ElementInfo
    concrete: str | None = None

    def set(self, value: Any) -> None:
        """Replace the element in its place."""
        if self.holder is None or self.key is None:
            raise Unprocessable("The resource itself cannot be replaced by a patch")
        if self.index is None:
            self.holder[self.key] = value
        else:
            self.holder[self.key][self.index] = value
        self.value = value

    def remove(self) -> None:
        """Remove the element from its place; an emptied list goes with it."""
        if self.holder is None or self.key is None:
            raise Unprocessable("The resource itself cannot be deleted by a patch")
        if self.index is None:
            del self.holder[self.key]
            return
        items = self.holder[self.key]
        del items[self.index]
        if not items:
            del self.holder[self.key]


def split_path(path: str) -> list[str]:
    """Split a FHIRPath path at its top-level dots (not inside parentheses, brackets or quotes)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    i = 0
    while i < len(path):
        ch = path[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'`\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise InvalidRequest(f"Unbalanced brackets in the path {path!r}")
        elif ch == "." and depth == 0:
            parts.append(path[start:i].strip())
            start = i + 1
        i += 1
    if quote or depth:
        raise InvalidRequest(f"Unbalanced quotes or brackets in the path {path!r}")
    parts.append(path[start:].strip())
    if any(not p for p in parts):
        raise InvalidRequest(f"Empty step in the path {path!r}")
    return parts


def _split_index(step: str) -> tuple[str, int | None]:
    if step.endswith("]") and "[" in step:
        head, _, idx = step[:-1].rpartition("[")
        if not idx.strip().isdigit():
            raise InvalidRequest(f"Only integer indexes are supported, not [{idx}]")
        return head, int(idx)
    return step, None


@lru_cache(maxsize=256)
def _criteria(expression: str) -> Callable[[Any], list[Any]]:
    """Compile patch-path criteria, within the limits on tenants' FHIRPath (RE2 regexes, a CPU budget)."""
    problems = expression_problems(expression)
    if problems:
        raise Unprocessable(f"The criteria {expression!r} are refused: {'; '.join(problems)}")
    try:
        return compile_bounded(expression, seconds=PER_EVALUATION_SECONDS)
    except Exception as exc:  # fhirpathpy raises assorted parser errors
        raise InvalidRequest(f"Invalid FHIRPath criteria {expression!r}: {exc}") from None


def _matches(expression: str, value: Any) -> bool:
    try:
        result = _criteria(expression)(value)
    except (InvalidRequest, Unprocessable):
        raise
    except TooCostly:
        raise Unprocessable(f"The criteria {expression!r} ran past the evaluation budget") from None
    except Exception as exc:  # evaluation errors of user criteria
        raise Unprocessable(f"The criteria {expression!r} failed: {exc}") from None
    return bool(result == [True])


def _literal(arg: str) -> str:
    arg = arg.strip()
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        return arg[1:-1]
    raise InvalidRequest(f"Expected a quoted string, not {arg!r}")


def _members(node: Node, name: str) -> list[Node]:
    if not isinstance(node.value, dict):
        return []
    candidates: list[tuple[str, ElementInfo, str | None]] = []
    exact = child_info(node.info, node.concrete, name)
    choices = choice_names(node.info, node.concrete, name)
    if name in node.value:
        known = exact or (ElementInfo(f"{node.info.path}.{name}", False, ()), None)
        candidates.append((name, known[0], known[1]))
    else:
        for member, typ in choices or []:
            found = child_info(node.info, node.concrete, member) if member in node.value else None
            if found is not None:
                candidates.append((member, found[0], typ))
    if not candidates and exact is None and choices is None:
        raise Unprocessable(f"{node.info.path} has no element {name!r}")
    out: list[Node] = []
    for member, info, concrete in candidates:
        value = node.value[member]
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            item_type = concrete
            if isinstance(item, dict) and info.types == ("Resource",) and "resourceType" in item:
                item_type = str(item["resourceType"])
            out.append(
                Node(item, node.value, member, i if isinstance(value, list) else None, info, item_type)
            )
    return out


def _function(nodes: list[Node], name: str, arg: str) -> list[Node]:
    if name == "where":
        return [n for n in nodes if _matches(arg, n.value)]
    if name in {"first", "last", "tail", "single"} and arg.strip():
        raise InvalidRequest(f"{name}() takes no argument")
    if name == "first":
        return nodes[:1]
    if name == "last":
        return nodes[-1:]
    if name == "tail":
        return nodes[1:]
    if name == "single":
        if len(nodes) > 1:
            raise Unprocessable("single() found more than one element")
        return nodes
    if name == "ofType":
        wanted = arg.strip().removeprefix("FHIR.")
        return [
            n for n in nodes if (n.concrete or (n.info.types[0] if len(n.info.types) == 1 else "")) == wanted
        ]
    if name == "extension":
        url = _literal(arg)
        out: list[Node] = []
        for n in nodes:
            out.extend(
                e for e in _members(n, "extension") if isinstance(e.value, dict) and e.value.get("url") == url
            )
        return out
    raise InvalidRequest(f"The function {name}() is not supported in patch paths")


def navigate(resource: dict[str, Any], path: str) -> list[Node]:
    """Return the elements of ``resource`` that ``path`` selects, each with its place."""
    rtype = str(resource.get("resourceType", ""))
    steps = split_path(path)
    nodes = [Node(resource, None, None, None, root_info(rtype), rtype)]
    if steps and steps[0] == rtype:
        steps = steps[1:]
    elif steps and steps[0][:1].isupper() and "(" not in steps[0]:
        raise Unprocessable(f"The path {path!r} is for {steps[0]}, not {rtype}")
    for step in steps:
        head, index = _split_index(step)
        if head.endswith(")") and "(" in head:
            fname, _, arg = head[:-1].partition("(")
            nodes = _function(nodes, fname.strip(), arg)
        elif head.startswith("$"):
            if head != "$this":
                raise InvalidRequest(f"{head} is not supported in patch paths")
        else:
            name = head.strip("`")
            if not name.replace("_", "a").isalnum():
                raise InvalidRequest(f"Invalid step {step!r} in the path {path!r}")
            nodes = [child for n in nodes for child in _members(n, name)]
        if index is not None:
            nodes = nodes[index : index + 1]
    return nodes
