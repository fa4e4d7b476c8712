"""Compile the FHIRPath expressions of SearchParameters into fast accessors over resource dicts.

Each expression is compiled once per resource type into a chain of small closures that read JSON keys
chosen with the R4 element table (``storage/search/elements.py``), so a choice element such as
``Observation.value`` becomes the keys ``valueQuantity``, ``valueString``... and every value found carries
its FHIR type. The compiled subset covers every expression of the official R4 definitions:

- paths, ``|`` unions, parentheses, ``[n]`` indexers, ``first()``;
- ``as(T)``, ``ofType(T)`` and the ``X as T`` operator;
- ``where(...)`` with ``resolve() is T``, ``path = 'literal'``, ``path != 'literal'`` and
  ``hasExtension('url')``, combined with ``and`` / ``or``;
- ``extension('url')``;
- the idiom ``X.exists() and X != false`` (``Patient.deceased``).

Anything else (custom SearchParameters may use any FHIRPath) falls back to ``fhirpathpy`` with its R4
model (``storage/search/fhirpath_fallback.py``), about 100x slower; an expression neither can compile is
not indexed (logged as a warning).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from storage.search.elements import children, is_type
from storage.search.fhirpath_parse import Unsupported
from storage.search.fhirpath_parse import parse as parse_tree
from storage.search.fhirpath_steps import (
    Accessor,
    Compiled,
    Item,
    Predicate,
    Step,
    chain,
    extension_step,
    filter_step,
    index_step,
    key_path,
    member_step,
    reference_type,
    simple_member,
)

log = logging.getLogger(__name__)

_EXISTS_IDIOM = re.compile(r"\s*(?P<p>[A-Za-z][\w.]*)\.exists\(\)\s+and\s+(?P=p)\s*!=\s*false\s*")
_ROOTS = frozenset({"Resource", "DomainResource"})


def _condition(cond: tuple[Any, ...], in_types: set[str]) -> Predicate:
    kind = cond[0]
    if kind in {"and", "or"}:
        left, right = _condition(cond[1], in_types), _condition(cond[2], in_types)
        if kind == "and":
            return lambda v, t: left(v, t) and right(v, t)
        return lambda v, t: left(v, t) or right(v, t)
    if kind == "resolve_is":
        wanted = cond[1]
        return lambda v, t: (rt := reference_type(v)) is not None and is_type(rt, wanted)
    if kind == "has_ext":
        url = cond[1]
        return lambda v, t: (
            type(v) is dict and any(type(e) is dict and e.get("url") == url for e in v.get("extension", ()))
        )
    names, literal = cond[1], cond[2]
    step, _ = _steps([("member", n) for n in names], in_types)
    if kind == "eq":
        return lambda v, t: any(x == literal for x, _ in step([(v, t)]))
    return lambda v, t: not any(x == literal for x, _ in step([(v, t)]))


def _steps(steps: list[tuple[Any, ...]], in_types: set[str]) -> tuple[Step, set[str]]:
    funcs: list[Step] = []
    types = set(in_types)
    i = 0
    while i < len(steps):
        step = steps[i]
        kind = step[0]
        if kind == "member":
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            only = nxt[1] if nxt is not None and nxt[0] == "as" else None
            keys = simple_member(types, step[1], only)
            if keys is not None:
                # A run of members with one key and one type each reads nested keys in one closure.
                path = [keys[0]]
                types = {keys[1]}
                i += 2 if only is not None else 1
                while i < len(steps) and steps[i][0] == "member":
                    nxt = steps[i + 1] if i + 1 < len(steps) else None
                    only = nxt[1] if nxt is not None and nxt[0] == "as" else None
                    more = simple_member(types, steps[i][1], only)
                    if more is None:
                        break
                    path.append(more[0])
                    types = {more[1]}
                    i += 2 if only is not None else 1
                funcs.append(key_path(path, next(iter(types))))
                continue
            func, types = member_step(types, step[1], only)
            if only is not None:
                i += 1
        elif kind == "as":
            wanted = step[1]
            keep = {t for t in types if is_type(t, wanted)}
            types = keep
            func = filter_step(lambda v, t, keep=keep: t in keep)  # type: ignore[misc]
        elif kind == "where":
            func = filter_step(_condition(step[1], types))
        elif kind == "ext":
            func, types = extension_step(step[1]), {"Extension"}
        elif kind == "index":
            n = step[1]
            func = index_step(n)
        else:  # pragma: no cover - the parser produces no other step
            raise Unsupported(str(kind))
        funcs.append(func)
        i += 1
    if not types:
        return (lambda items: []), set()
    return chain(funcs), types


def _branch(node: tuple[Any, ...], rtype: str) -> tuple[Step, set[str]] | None:
    """Compile one path node evaluated against ``[(resource, rtype)]``; None if it is for another type."""
    if node[0] == "union":
        parts = [c for c in (_branch(b, rtype) for b in node[1]) if c is not None]
        if not parts:
            return None
        funcs = [p[0] for p in parts]
        types = set().union(*(p[1] for p in parts))
        return (lambda items: [x for f in funcs for x in f(items)]), types
    head, steps = node[1], node[2]
    if head[0] == "name":
        if head[1][:1].islower():
            steps = [("member", head[1]), *steps]
        elif head[1] != rtype and head[1] not in _ROOTS:
            return None
        return _steps(steps, {rtype})
    inner = _branch(head, rtype)
    if inner is None:
        return None
    rest, types = _steps(steps, inner[1])
    return chain([inner[0], rest]), types


def _branch_texts(expression: str, rtype: str) -> list[str]:
    """Return the top-level ``|`` branches of ``expression`` that start with ``rtype`` (or Resource)."""
    out: list[str] = []
    depth, start = 0, 0
    quoted = False
    for i, ch in enumerate(expression + "|"):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            part = expression[start:i].strip()
            root = re.match(r"\(*\s*([A-Za-z]+)", part)
            # A lower-case root is an element of the base type itself (``name | alias``).
            if root and (root.group(1) in {rtype, *_ROOTS} or root.group(1)[:1].islower()):
                out.append(part)
            start = i + 1
    return out


def _first_keys(node: tuple[Any, ...], rtype: str) -> frozenset[str] | None:
    """Return the top-level keys a compiled path node reads first (None when it is not a plain member)."""
    if node[0] == "union":
        found: set[str] = set()
        for branch in node[1]:
            keys = _first_keys(branch, rtype)
            if keys is None:
                return None
            found |= keys
        return frozenset(found)
    head, steps = node[1], node[2]
    if head[0] != "name":
        return _first_keys(head, rtype)
    if head[1][:1].islower():
        steps = [("member", head[1]), *steps]
    elif head[1] != rtype and head[1] not in _ROOTS:
        return frozenset()
    if not steps:
        return None
    if steps[0][0] == "ext":
        return frozenset({"extension"})
    if steps[0][0] != "member":
        return None
    only = steps[1][1] if len(steps) > 1 and steps[1][0] == "as" else None
    return frozenset(k for k, t in children(rtype, steps[0][1]) if only is None or is_type(t, only))


def _exists_idiom(path: str, rtype: str) -> Accessor | None:
    compiled = _branch(parse_tree(path), rtype)
    if compiled is None:
        return None
    step = compiled[0]

    def run(resource: dict[str, Any]) -> list[Item]:
        found = step([(resource, rtype)])
        return [(bool(found) and not all(v is False for v, _ in found), "boolean")]

    return run


def compile_expression(expression: str | None, rtype: str) -> Compiled:
    """Compile the parts of ``expression`` that apply to ``rtype`` into an accessor of typed values."""
    if not expression:
        return Compiled(None, "none")
    branches = _branch_texts(expression, rtype)
    if not branches:
        return Compiled(None, "none")
    text = " | ".join(branches)
    try:
        idiom = _EXISTS_IDIOM.fullmatch(text)
        if idiom:
            return Compiled(_exists_idiom(idiom.group("p"), rtype), "compiled", None, text)
        trees = [parse_tree(branch) for branch in branches]
        compiled = [(b, t, _branch(t, rtype)) for b, t in zip(branches, trees, strict=True)]
    except Unsupported as exc:
        log.debug("FHIRPath %r falls back to fhirpathpy: %s", text, exc)
        from storage.search.fhirpath_fallback import fallback

        return fallback(text)
    parts = tuple(
        Compiled(_root(c[0], rtype), "compiled", _first_keys(tree, rtype), branch, (), *_prefix(tree, rtype))
        for branch, tree, c in compiled
        if c is not None
    )
    if not parts:
        return Compiled(None, "none")
    if len(parts) == 1:
        return parts[0]
    accessors = [p.accessor for p in parts if p.accessor is not None]
    keys = [p.keys for p in parts]
    all_keys = None if any(k is None for k in keys) else frozenset().union(*keys)  # type: ignore[arg-type]
    return Compiled(
        lambda resource: [x for a in accessors for x in a(resource)], "compiled", all_keys, text, parts
    )


def _prefix(tree: tuple[Any, ...], rtype: str) -> tuple[tuple[str, ...], str, Step | None]:
    """Split a branch into its leading run of plain keys, the type found there, and the remaining steps.

    Extraction walks the keys of every branch of a type together (a trie), so that ``Patient.address.city``
    and ``Patient.address.state`` read ``address`` once.
    """
    if tree[0] != "path" or tree[1][0] != "name":
        return (), rtype, None
    head, steps = tree[1], list(tree[2])
    if head[1][:1].islower():
        steps = [("member", head[1]), *steps]
    keys: list[str] = []
    current = rtype
    i = 0
    while i < len(steps) and steps[i][0] == "member":
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        only = nxt[1] if nxt is not None and nxt[0] == "as" else None
        simple = simple_member({current}, steps[i][1], only)
        if simple is None:
            break
        keys.append(simple[0])
        current = simple[1]
        i += 2 if only is not None else 1
    if not keys:
        return (), rtype, None
    remaining = steps[i:]
    if not remaining:
        return tuple(keys), current, None
    rest, _ = _steps(remaining, {current})
    return tuple(keys), current, rest


def _root(step: Step, rtype: str) -> Accessor:
    return lambda resource: step([(resource, rtype)])


__all__ = ["Accessor", "Compiled", "Item", "Step", "Unsupported", "compile_expression", "reference_type"]
