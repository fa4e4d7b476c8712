"""Parse FHIR search parameters into criteria and result options (no database here).

A query is a list of ``(name, value)`` pairs as they arrived (URL query, form body, ``If-None-Exist``).
Repeated parameters are AND-ed; comma-separated values are OR-ed (``\\,`` is a literal comma). Names carry
modifiers (``name:exact``), chains (``subject:Patient.name``) and reverse chains
(``_has:Observation:patient:code``).

Unknown parameters and unsupported modifiers are an InvalidRequest, unless the caller is lenient: then they
are ignored and reported as warnings. Malformed values are always an InvalidRequest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from core.errors import InvalidRequest, Issue
from core.fhirtypes import resource_types
from core.urlvalues import capped_int
from storage.search.registry import RESOURCE_COLUMNS, BoundParameter, SearchRegistry

MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"not", "text", "missing"}),
    "reference": frozenset({"missing"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"below", "above", "missing"}),
}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
TOTAL_MODES = frozenset({"none", "estimate", "accurate"})
SUMMARY_MODES = frozenset({"count", "false", "data", "text"})
IGNORED = frozenset({"_format", "_pretty"})
MAX_CHAIN_DEPTH = 3
# Result parameters Bulkhead does not support; named so that the CapabilityStatement can list them.
UNSUPPORTED_RESULT = frozenset({"_contained", "_containedType", "_offset", "_score", "_graph"})
UNSUPPORTED_SEARCH = frozenset({"_text", "_content", "_query", "_filter", "_list", "_security-label"})
_SPLIT_OR = re.compile(r"(?<!\\),")


@dataclass(frozen=True)
class Criterion:
    """One search parameter occurrence: its values are OR-ed, criteria are AND-ed.

    ``param`` is None for ``_id`` and ``_lastUpdated`` (columns of the resource table) and for ``_has``.
    ``chain`` holds the criterion applied to the referenced resources (``subject:Patient.name=x``) with
    ``targets`` the types it is applied to; ``has`` is a reverse chain (source type, reference parameter
    code, criterion on the source).
    """

    code: str
    type: str
    values: tuple[str, ...]
    modifier: str | None = None
    param: BoundParameter | None = None
    targets: tuple[str, ...] = ()
    chain: tuple[Criterion, ...] = ()
    has: tuple[str, str, Criterion] | None = None


@dataclass(frozen=True)
class SortKey:
    """One ``_sort`` key."""

    code: str
    type: str
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """One ``_include`` / ``_revinclude``: source type, reference parameter (None for ``*``), target type.

    ``reached`` are the resource types the include can bring in, resolved when it is parsed (the forward
    include's target types, the reverse include's source type); empty means every type. Authorization asks
    for read access on exactly these, and the search brings in nothing else.
    """

    source: str | None
    param: str | None
    target: str | None
    reverse: bool = False
    iterate: bool = False
    reached: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: criteria plus what the result should look like."""

    types: tuple[str, ...]
    criteria: tuple[Criterion, ...] = ()
    count: int | None = None
    sort: tuple[SortKey, ...] = ()
    includes: tuple[Include, ...] = ()
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    cursor: str | None = None
    warnings: tuple[Issue, ...] = ()
    applied: tuple[tuple[str, str], ...] = field(default=())


def split_values(value: str) -> list[str]:
    """Split on unescaped commas, keeping the other escapes for the type-specific parsers."""
    return [part.replace("\\,", ",") for part in _SPLIT_OR.split(value)]


def unescape(value: str) -> str:
    """Undo FHIR search escapes (``\\|``, ``\\$``, ``\\,``, ``\\\\``)."""
    return re.sub(r"\\([\\|$,])", r"\1", value)


class _Parser:
    def __init__(self, registry: SearchRegistry, types: Sequence[str], lenient: bool):
        self.registry = registry
        self.types = tuple(types)
        self.lenient = lenient
        self.warnings: list[Issue] = []
        self.errors: list[Issue] = []

    def refuse(self, message: str, *, code: str = "not-supported") -> None:
        """Record an unknown or unsupported parameter: a warning when lenient, else an error."""
        if self.lenient:
            self.warnings.append(Issue(f"{message}; ignored", code=code, severity="warning"))
        else:
            self.errors.append(Issue(message, code=code))

    def param(self, rtype: str, code: str) -> BoundParameter | None:
        """Return the parameter ``code`` of ``rtype``, if defined."""
        return self.registry.for_type(rtype).get(code)

    def common_param(self, code: str) -> tuple[str, BoundParameter | None] | None:
        """Return (type, parameter of the first type) if ``code`` is searchable on every type searched."""
        if code in RESOURCE_COLUMNS:
            return ("token" if code == "_id" else "date"), None
        found: BoundParameter | None = None
        for rtype in self.types:
            param = self.param(rtype, code)
            if param is None or not param.searchable:
                return None
            if found is not None and found.type != param.type:
                return None
            found = found or param
        return (found.type, found) if found is not None else None

    def criterion(self, rtype: str | None, name: str, value: str, depth: int = 0) -> Criterion | None:
        """Parse one parameter occurrence (None when it is refused under lenient handling)."""
        if name.startswith("_has:"):
            return self.reverse_chain(rtype, name, value, depth)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        if rtype is None:
            common = self.common_param(code)
            if common is None:
                self.refuse(f"Unknown search parameter {code!r} for {', '.join(self.types) or 'all types'}")
                return None
            ptype, param = common
        elif code in RESOURCE_COLUMNS:
            ptype, param = ("token" if code == "_id" else "date"), None
        else:
            param = self.param(rtype, code)
            if param is None:
                self.refuse(f"Unknown search parameter {code!r} for {rtype}")
                return None
            if not param.searchable:
                self.refuse(f"Search parameter {code!r} ({param.type}) is not supported")
                return None
            ptype = param.type
        if dot:
            return self.chain(rtype, code, modifier or None, param, rest, value, depth)
        if modifier and not self.modifier_ok(code, ptype, modifier, param):
            return None
        values = tuple(split_values(value))
        if modifier == "missing" and value not in {"true", "false"}:
            raise InvalidRequest(f"{name} takes true or false, not {value!r}")
        return Criterion(code, ptype, values, modifier or None, param)

    def modifier_ok(self, code: str, ptype: str, modifier: str, param: BoundParameter | None) -> bool:
        """Return whether ``modifier`` is supported on this parameter (refuse it otherwise)."""
        if code == "_id":
            allowed: frozenset[str] = frozenset({"not"})
        elif code == "_lastUpdated":
            allowed = frozenset()
        else:
            allowed = MODIFIERS.get(ptype, frozenset())
        if modifier in allowed:
            return True
        if ptype == "reference" and param is not None and modifier in param.targets():
            return True
        self.refuse(f"Modifier :{modifier} is not supported on {code!r} ({ptype})")
        return False

    def chain(
        self,
        rtype: str | None,
        code: str,
        type_modifier: str | None,
        param: BoundParameter | None,
        rest: str,
        value: str,
        depth: int,
    ) -> Criterion | None:
        """Parse a chained parameter (``subject:Patient.name``) into criteria on each target type."""
        if param is None or param.type != "reference":
            self.refuse(f"Only reference parameters can be chained, not {code!r}")
            return None
        if depth >= MAX_CHAIN_DEPTH:
            raise InvalidRequest(f"Chains deeper than {MAX_CHAIN_DEPTH} are not supported")
        if type_modifier is not None and type_modifier not in param.targets():
            self.refuse(f"{type_modifier!r} is not a target type of {code!r}")
            return None
        candidates = (type_modifier,) if type_modifier else param.targets()
        next_code = rest.partition(".")[0].partition(":")[0]
        targets = tuple(
            t for t in candidates if next_code in RESOURCE_COLUMNS or next_code in self.registry.for_type(t)
        )
        if not targets:
            self.refuse(f"No target type of {code!r} has a search parameter {next_code!r}")
            return None
        chained = []
        for target in targets:
            inner = self.criterion(target, rest, value, depth + 1)
            if inner is None:
                return None
            chained.append(inner)
        return Criterion(code, "reference", (), None, param, targets, tuple(chained))

    def reverse_chain(self, rtype: str | None, name: str, value: str, depth: int) -> Criterion | None:
        """Parse ``_has:Type:reference:parameter``."""
        parts = name.split(":", 3)
        if len(parts) != 4 or not parts[3]:
            raise InvalidRequest(f"{name!r} is not of the form _has:Type:reference:parameter")
        _, source, ref_code, rest = parts
        if rtype is None:
            self.refuse("_has needs a resource type")
            return None
        if source not in resource_types():
            raise InvalidRequest(f"_has names an unknown resource type {source!r}")
        ref = self.param(source, ref_code)
        if ref is None or ref.type != "reference" or not ref.indexed:
            self.refuse(f"{source} has no reference search parameter {ref_code!r}")
            return None
        if rtype not in ref.targets():
            self.refuse(f"{source}.{ref_code} cannot point at {rtype}")
            return None
        if depth >= MAX_CHAIN_DEPTH:
            raise InvalidRequest(f"Chains deeper than {MAX_CHAIN_DEPTH} are not supported")
        inner = self.criterion(source, rest, value, depth + 1)
        if inner is None:
            return None
        return Criterion("_has", "reference", (), None, None, (), (), (source, ref_code, inner))

    def sort(self, value: str) -> list[SortKey]:
        """Parse ``_sort`` keys."""
        keys = []
        for raw in value.split(","):
            part = raw.strip()
            descending = part.startswith("-")
            code = part.lstrip("-")
            if not code:
                raise InvalidRequest(f"_sort={value!r} names an empty parameter")
            common = self.common_param(code) if self.types else None
            if common is None or common[0] not in MODIFIERS:
                self.refuse(f"Cannot sort by {code!r}")
                continue
            keys.append(SortKey(code, common[0], descending))
        return keys

    def include(self, name: str, value: str) -> Include | None:
        """Parse one ``_include`` / ``_revinclude`` value."""
        reverse = name.startswith("_revinclude")
        modifier = name.partition(":")[2]
        if modifier not in {"", "iterate", "recurse"}:
            self.refuse(f"{name} is not supported")
            return None
        iterate = modifier in {"iterate", "recurse"}
        if value == "*":
            return Include(None, None, None, reverse, iterate, ())
        parts = value.split(":")
        if len(parts) not in {2, 3} or parts[0] not in resource_types():
            raise InvalidRequest(f"{name}={value!r} is not of the form Type:parameter[:targetType]")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if target is not None and target not in resource_types():
            raise InvalidRequest(f"{name}={value!r} names an unknown target type {target!r}")
        if code != "*":
            param = self.param(source, code)
            if param is None or param.type != "reference" or not param.indexed:
                self.refuse(f"{source} has no reference search parameter {code!r} to include")
                return None
            targets = param.targets()
        else:
            targets = tuple(
                sorted(
                    {
                        t
                        for p in self.registry.for_type(source).values()
                        if p.type == "reference" and p.indexed
                        for t in p.targets()
                    }
                )
            )
        if target is not None and target not in targets:
            raise InvalidRequest(f"{name}={value!r}: {source}.{code} cannot point at {target}")
        if reverse:
            reached: tuple[str, ...] = (source,)
        else:
            reached = (target,) if target is not None else targets
        if not reverse and set(reached) >= resource_types():
            reached = ()
        return Include(source, None if code == "*" else code, target, reverse, iterate, reached)


def _count(value: str, max_count: int) -> int:
    return capped_int(value, "_count", max_count)


def parse_search(
    registry: SearchRegistry,
    types: Sequence[str],
    pairs: Iterable[tuple[str, str]],
    *,
    lenient: bool = False,
    max_count: int = 1000,
    criteria_only: bool = False,
) -> SearchQuery:
    """Parse search parameters for ``types`` (one type, or several for a system search).

    With ``criteria_only`` (conditional interactions, ``_typeFilter``, bulk update/delete) result parameters
    are refused: only criteria make sense there.
    """
    parser = _Parser(registry, types, lenient)
    single = types[0] if len(types) == 1 else None
    criteria: list[Criterion] = []
    sort: list[SortKey] = []
    includes: list[Include] = []
    applied: list[tuple[str, str]] = []
    options: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest("Search parameters may not contain NUL characters")
        base_name = name.partition(":")[0]
        if base_name in IGNORED or name == "_type":  # _type is the caller's (system search)
            continue
        is_result = base_name in {"_count", "_sort", "_include", "_revinclude", "_total", "_summary"} or (
            base_name in {"_elements", "_cursor"}
        )
        if is_result and criteria_only:
            raise InvalidRequest(f"{name} is not allowed here: only search criteria are")
        if base_name in UNSUPPORTED_RESULT or base_name in UNSUPPORTED_SEARCH:
            parser.refuse(f"{base_name} is not supported")
            continue
        if base_name in {"_include", "_revinclude"}:
            found = parser.include(name, value)
            if found is not None:
                includes.append(found)
                applied.append((name, value))
        elif base_name == "_sort":
            sort.extend(parser.sort(value))
            applied.append((name, value))
        elif is_result:
            options[base_name] = value
            applied.append((name, value))
        else:
            criterion = parser.criterion(single, name, value)
            if criterion is not None:
                criteria.append(criterion)
                applied.append((name, value))
    if parser.errors:
        raise InvalidRequest(parser.errors[0].diagnostics, issues=parser.errors)
    total = options.get("_total")
    if total is not None and total not in TOTAL_MODES:
        raise InvalidRequest(f"_total must be one of none, estimate, accurate; not {total!r}")
    summary = options.get("_summary")
    if summary is not None and summary not in SUMMARY_MODES:
        if not lenient:
            raise InvalidRequest(f"_summary={summary} is not supported (count, data, text and false are)")
        parser.warnings.append(Issue(f"_summary={summary} is not supported; ignored", severity="warning"))
        summary = None
    elements = tuple(e.strip() for e in options.get("_elements", "").split(",") if e.strip())
    return SearchQuery(
        types=tuple(types),
        criteria=tuple(criteria),
        count=_count(options["_count"], max_count) if "_count" in options else None,
        sort=tuple(sort),
        includes=tuple(includes),
        total=total,
        summary=summary,
        elements=elements,
        cursor=options.get("_cursor"),
        warnings=tuple(parser.warnings),
        applied=tuple(applied),
    )
