"""The search-parameter registry: the R4 definitions shipped as data, plus a partition's own parameters.

``builtin_registry()`` holds every official R4 SearchParameter (``data/search_parameters.json``, built by
``python -m tools.extract_search_parameters``). A partition may add custom SearchParameters: a source of
them is registered with ``register_custom_source`` (importing ``storage`` does this, in every process),
and ``registry_for(session, partition_id)`` returns the built-in registry extended with that partition's
parameters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy.orm import Session

from core.fhirtypes import resource_types
from storage.search.fhirpath import Accessor, Compiled, compile_expression

INDEXED_TYPES = frozenset({"string", "token", "date", "reference", "number", "quantity", "uri"})
# Parameters answered from columns of the resource table, never indexed in side tables.
RESOURCE_COLUMNS = frozenset({"_id", "_lastUpdated"})
_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})


@dataclass(frozen=True)
class SearchParameterDef:
    """One SearchParameter definition (R4 fields Bulkhead uses)."""

    code: str
    url: str
    type: str
    base: tuple[str, ...]
    expression: str | None = None
    target: tuple[str, ...] = ()
    modifier: tuple[str, ...] = ()
    comparator: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()
    component: tuple[str, ...] = ()
    multiple_or: bool | None = None
    multiple_and: bool | None = None
    #: False while a partition's custom parameter is indexed on writes but its reindex has not completed.
    ready: bool = True

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchParameterDef:
        """Build a definition from the shipped table's form or from a FHIR SearchParameter resource."""
        component = tuple(
            c if isinstance(c, str) else str(c.get("definition", "")) for c in data.get("component", ())
        )
        return cls(
            code=str(data["code"]),
            url=str(data.get("url", "")),
            type=str(data["type"]),
            base=tuple(data.get("base", ())),
            expression=data.get("expression"),
            target=tuple(data.get("target", ())),
            modifier=tuple(data.get("modifier", ())),
            comparator=tuple(data.get("comparator", ())),
            chain=tuple(data.get("chain", ())),
            component=component,
            multiple_or=data.get("multipleOr"),
            multiple_and=data.get("multipleAnd"),
        )

    def applies_to(self, rtype: str) -> bool:
        """Return whether this parameter is defined on ``rtype``."""
        if rtype in self.base or "Resource" in self.base:
            return True
        return "DomainResource" in self.base and rtype not in _NOT_DOMAIN


@dataclass(frozen=True)
class BoundParameter:
    """A definition as it applies to one resource type, with its compiled accessor."""

    definition: SearchParameterDef
    resource_type: str
    accessor: Accessor | None = field(compare=False)
    mode: str
    keys: frozenset[str] | None = None
    text: str = ""
    branches: tuple[Compiled, ...] = field(default=(), compare=False)

    @property
    def code(self) -> str:
        """Return the parameter's code (its name in a query)."""
        return self.definition.code

    @property
    def type(self) -> str:
        """Return the parameter's type (string, token, date...)."""
        return self.definition.type

    @property
    def indexed(self) -> bool:
        """Return whether values of this parameter are written to a side table."""
        return self.type in INDEXED_TYPES and self.accessor is not None and self.code not in RESOURCE_COLUMNS

    @property
    def searchable(self) -> bool:
        """Return whether Bulkhead answers searches on this parameter."""
        return (self.indexed and self.definition.ready) or self.code in RESOURCE_COLUMNS

    def targets(self) -> tuple[str, ...]:
        """Return the resource types a reference parameter may point at."""
        targets = self.definition.target
        if not targets or "Resource" in targets:
            return tuple(sorted(resource_types()))
        return targets


class SearchRegistry:
    """Search parameters by resource type and code; accessors compile on first use of a type."""

    def __init__(self, definitions: Iterable[SearchParameterDef]):
        self.definitions: tuple[SearchParameterDef, ...] = tuple(definitions)
        self._by_type: dict[str, dict[str, BoundParameter]] = {}
        self._lock = threading.Lock()

    def for_type(self, rtype: str) -> dict[str, BoundParameter]:
        """Return the parameters of ``rtype`` by code (a later definition of a code replaces an earlier)."""
        found = self._by_type.get(rtype)
        if found is not None:
            return found
        with self._lock:
            bound: dict[str, BoundParameter] = {}
            for definition in self.definitions:
                if definition.applies_to(rtype):
                    compiled = compile_expression(definition.expression, rtype)
                    bound[definition.code] = BoundParameter(
                        definition,
                        rtype,
                        compiled.accessor,
                        compiled.mode,
                        compiled.keys,
                        compiled.text,
                        compiled.parts(),
                    )
            self._by_type[rtype] = bound
            return bound

    def extended(self, extra: Sequence[SearchParameterDef]) -> SearchRegistry:
        """Return a registry with ``extra`` definitions added after (and so overriding) these."""
        return SearchRegistry((*self.definitions, *extra)) if extra else self


@cache
def builtin_registry() -> SearchRegistry:
    """Return the registry of the official R4 SearchParameters shipped with Bulkhead."""
    text = resources.files("storage.search").joinpath("data/search_parameters.json").read_text("utf-8")
    table = json.loads(text)
    return SearchRegistry(SearchParameterDef.from_json(p) for p in table["parameters"])


CustomSource = Callable[[Session, int], Sequence[SearchParameterDef]]
_custom_sources: list[CustomSource] = []
_extended: dict[tuple[SearchParameterDef, ...], SearchRegistry] = {}


def register_custom_source(source: CustomSource) -> None:
    """Register a function returning a partition's own SearchParameters (``(session, partition_id)``)."""
    if source not in _custom_sources:
        _custom_sources.append(source)


def registry_for(session: Session | None, partition_id: int | None) -> SearchRegistry:
    """Return the registry of one partition: the built-in one plus the partition's custom parameters."""
    base = builtin_registry()
    if session is None or partition_id is None or not _custom_sources:
        return base
    extra = tuple(d for source in _custom_sources for d in source(session, partition_id))
    if not extra:
        return base
    registry = _extended.get(extra)
    if registry is None:
        if len(_extended) > 64:
            _extended.clear()
        registry = _extended[extra] = base.extended(extra)
    return registry


def parameters_for(
    source: Session | SearchRegistry | None, partition_id: int | None, rtype: str
) -> dict[str, BoundParameter]:
    """Return the search parameters of ``rtype`` in a partition, by code."""
    if isinstance(source, SearchRegistry):
        return source.for_type(rtype)
    return registry_for(source, partition_id).for_type(rtype)
