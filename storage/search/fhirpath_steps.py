"""The building blocks of compiled FHIRPath: steps over lists of (JSON value, FHIR type) items."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from storage.search.elements import children, is_type

Item = tuple[Any, str]
Step = Callable[[list[Item]], list[Item]]
Predicate = Callable[[Any, str], bool]
SCAN_KEYS_ABOVE = 6


def member_step(in_types: set[str], name: str, only: str | None) -> tuple[Step, set[str]]:
    """Return a step reading child ``name`` of values of ``in_types`` (only type ``only`` if given)."""
    mapping: dict[str, list[tuple[str, str]]] = {}
    for t in in_types:
        alts = [(k, ot) for k, ot in children(t, name) if only is None or is_type(ot, only)]
        if alts:
            mapping[t] = alts
    out_types = {ot for alts in mapping.values() for _, ot in alts}
    if not mapping:
        return (lambda items: []), set()
    if len(mapping) == 1 and len(next(iter(mapping.values()))) == 1:
        key, ot = next(iter(mapping.values()))[0]

        def single(items: list[Item]) -> list[Item]:
            out: list[Item] = []
            for v, _ in items:
                if type(v) is not dict:
                    continue
                x = v.get(key)
                if x is None:
                    continue
                if type(x) is list:
                    out.extend([(e, ot) for e in x])
                else:
                    out.append((x, ot))
            return out

        return single, out_types
    by_key = {t: {k: ot for k, ot in alts} for t, alts in mapping.items()}

    def many(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for v, t in items:
            keys = by_key.get(t)
            if keys is None or type(v) is not dict:
                continue
            if len(keys) > SCAN_KEYS_ABOVE:
                found = [(k, x) for k, x in v.items() if k in keys]
            else:
                found = [(k, v[k]) for k in keys if k in v]
            for k, x in found:
                ot = keys[k]
                if type(x) is list:
                    out.extend([(e, ot) for e in x])
                elif x is not None:
                    out.append((x, ot))
        return out

    return many, out_types


@lru_cache(maxsize=16384)
def _type_in(reference: str) -> str | None:
    if reference.startswith("#"):
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2]
    return None


def reference_type(value: Any) -> str | None:
    """Return the resource type a Reference points at (from ``reference`` or ``type``), if it says."""
    if type(value) is not dict:
        return None
    ref = value.get("reference")
    if type(ref) is str:
        found = _type_in(ref)
        if found is not None:
            return found
    rtype = value.get("type")
    return rtype if isinstance(rtype, str) else None


def simple_member(in_types: set[str], name: str, only: str | None) -> tuple[str, str] | None:
    """Return the one (key, type) a member step reads, or None when it reads several or none."""
    if len(in_types) != 1:
        return None
    alts = [(k, t) for k, t in children(next(iter(in_types)), name) if only is None or is_type(t, only)]
    return alts[0] if len(alts) == 1 else None


def key_path(keys: list[str], out_type: str) -> Step:
    """Read nested keys (flattening lists at each level) and tag what is found with ``out_type``."""
    if len(keys) == 1:
        key = keys[0]

        def one(items: list[Item]) -> list[Item]:
            if len(items) == 1:
                v = items[0][0]
                x = v.get(key) if type(v) is dict else None
                if x is None:
                    return []
                if type(x) is list:
                    return [(e, out_type) for e in x]
                return [(x, out_type)]
            out: list[Item] = []
            for v, _ in items:
                x = v.get(key) if type(v) is dict else None
                if x is None:
                    continue
                if type(x) is list:
                    out.extend([(e, out_type) for e in x])
                else:
                    out.append((x, out_type))
            return out

        return one

    def nested(items: list[Item]) -> list[Item]:
        current = [v for v, _ in items]
        for key in keys:
            found: list[Any] = []
            for v in current:
                if type(v) is dict:
                    x = v.get(key)
                    if x is None:
                        continue
                    if type(x) is list:
                        found.extend(x)
                    else:
                        found.append(x)
            if not found:
                return []
            current = found
        return [(v, out_type) for v in current]

    return nested


def filter_step(pred: Predicate) -> Step:
    """Return a step keeping the items ``pred`` accepts."""
    return lambda items: [(v, t) for v, t in items if pred(v, t)]


def index_step(n: int) -> Step:
    """Return a step keeping the ``n``-th item."""
    return lambda items: items[n : n + 1]


def extension_step(url: str) -> Step:
    """Return a step reading the extensions with this ``url``."""

    def run(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for v, _ in items:
            if type(v) is dict:
                for e in v.get("extension", ()):
                    if type(e) is dict and e.get("url") == url:
                        out.append((e, "Extension"))
        return out

    return run


def chain(funcs: list[Step]) -> Step:
    """Return a step running ``funcs`` one after the other (stopping when nothing is left)."""
    if len(funcs) == 1:
        return funcs[0]

    def run(items: list[Item]) -> list[Item]:
        for f in funcs:
            if not items:
                return items
            items = f(items)
        return items

    return run


Accessor = Callable[[dict[str, Any]], list[Item]]


@dataclass(frozen=True)
class Compiled:
    """An accessor and how it was built: ``"compiled"`` (fast), ``"fhirpathpy"`` (fallback) or ``"none"``.

    ``keys`` are the top-level JSON keys the accessor can find anything under (None: it may read any), so
    that extraction skips accessors whose keys a resource does not have.
    """

    accessor: Accessor | None
    mode: str
    keys: frozenset[str] | None = None
    text: str = ""
    branches: tuple[Compiled, ...] = ()
    prefix: tuple[str, ...] = ()
    prefix_type: str = ""
    rest: Step | None = None

    def parts(self) -> tuple[Compiled, ...]:
        """Return the independently evaluated ``|`` branches (itself when it has none)."""
        return self.branches or ((self,) if self.accessor is not None else ())
