"""The entries of a batch or transaction as typed requests: what each one reaches, from what was parsed.

``parse_entry_searches`` parses each entry's search (``GET Type?params``), criteria (``PUT/PATCH/DELETE
Type?criteria``) and ``ifNoneExist`` condition once, with the partition's search registry; the runner uses
those parsed queries, and ``entry_request`` turns the same entry into the ``FhirRequest`` the authorizer
judges. An entry that could not be read (``entry.problem``) never runs, so it needs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.errors import BulkheadError, InvalidRequest
from services.bundle_entries import Entry
from services.requests import FhirRequest, Interaction
from storage.search import SearchQuery, SearchRegistry, parse_search, query_pairs

_READS = {"GET", "HEAD"}


@dataclass(frozen=True)
class EntryOutcome:
    """What one entry did, for its own audit event: the interaction, its target once resolved, the status."""

    index: int
    interaction: str
    method: str
    url: str
    resource_type: str | None
    resource_id: str | None
    status: int


def _criteria(registry: SearchRegistry, rtype: str, pairs: list[tuple[str, str]], what: str) -> SearchQuery:
    query = parse_search(registry, [rtype], pairs, criteria_only=True)
    if not query.criteria:
        raise InvalidRequest(f"The {what} names no search parameters")
    return query


def parse_entry_searches(
    entries: list[Entry], registry: Callable[[], SearchRegistry], max_count: int
) -> None:
    """Parse every entry's search, criteria and condition once (a failure becomes that entry's problem)."""
    for entry in entries:
        if entry.problem is not None or entry.rtype is None:
            continue
        try:
            if entry.method in _READS and entry.rid is None:
                entry.search = parse_search(registry(), [entry.rtype], entry.pairs, max_count=max_count)
            elif entry.conditional:
                entry.search = _criteria(registry(), entry.rtype, entry.pairs, "condition")
            if entry.method == "POST" and entry.if_none_exist is not None:
                pairs = query_pairs(entry.if_none_exist)
                entry.condition = _criteria(registry(), entry.rtype, pairs, "ifNoneExist condition")
        except BulkheadError as exc:
            entry.problem = exc


def _interaction(entry: Entry) -> Interaction:
    if entry.method in _READS:
        if entry.rid is None:
            return Interaction.SEARCH_TYPE
        return Interaction.VREAD if entry.vid is not None else Interaction.READ
    if entry.method == "POST":
        return Interaction.CREATE
    conditional = {
        "PUT": Interaction.CONDITIONAL_UPDATE,
        "PATCH": Interaction.CONDITIONAL_PATCH,
        "DELETE": Interaction.CONDITIONAL_DELETE,
    }
    plain = {"PUT": Interaction.UPDATE, "PATCH": Interaction.PATCH, "DELETE": Interaction.DELETE}
    return (conditional if entry.conditional else plain)[entry.method]


def entry_request(entry: Entry, partition: str) -> FhirRequest:
    """Return the typed request of one entry (``NOT_ALLOWED``, needing nothing, when it cannot run)."""
    if entry.problem is not None or entry.rtype is None:
        return FhirRequest(Interaction.NOT_ALLOWED, partition, entry.method, index=entry.index)
    interaction = _interaction(entry)
    search = entry.condition if interaction == Interaction.CREATE else entry.search
    return FhirRequest(
        interaction,
        partition,
        entry.method,
        resource_type=entry.rtype,
        resource_id=entry.rid,
        version_id=entry.vid,
        search=search,
        index=entry.index,
    )


__all__ = ["EntryOutcome", "entry_request", "parse_entry_searches"]
