"""The typed request: what a FHIR request (or one Bundle entry) asks for, parsed once.

Every request is read once into a ``FhirRequest`` (``services/parse.py``): the interaction, the resource
type, id and version, the parsed search with every type it can reach, the bulk operation's parameters, the
parsed entries of a Bundle. The authorizer judges that object (``needs_of``), and the views and services run
the same object: nothing parses the URL, the query or the body a second time, so what was authorized is what
runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.exportspec import ExportSpec
from core.fhirtypes import resource_types
from core.importspec import ImportSpec
from services.bundle_entries import Bases, Entry
from storage.search.query import Criterion, SearchQuery

EVERY_TYPE = "*"


class Interaction(StrEnum):
    """What a request does (also the ``operation`` of its audit event)."""

    CAPABILITIES = "capabilities"
    READ = "read"
    VREAD = "vread"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    CONDITIONAL_UPDATE = "conditional-update"
    CONDITIONAL_PATCH = "conditional-patch"
    CONDITIONAL_DELETE = "conditional-delete"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    HISTORY_SYSTEM = "history-system"
    SEARCH_TYPE = "search-type"
    SEARCH_SYSTEM = "search-system"
    BATCH = "batch"
    TRANSACTION = "transaction"
    EXPORT = "export"
    IMPORT = "import"
    REINDEX = "reindex"
    BULK_UPDATE = "bulk-update"
    BULK_DELETE = "bulk-delete"
    EVERYTHING = "everything"
    JOB_STATUS = "job-status"
    JOB_CANCEL = "job-cancel"
    JOB_FILE = "job-file"
    JOB_LIST = "job-list"
    NOT_ALLOWED = "not-allowed"
    ADMIN = "admin"
    PUBLIC = "public"


@dataclass(frozen=True)
class Need:
    """One permission (c r u d s) on one resource type (``*``: every type)."""

    permission: str
    resource_type: str


@dataclass(frozen=True)
class JobTarget:
    """The job a status, cancel or file URL names."""

    kind: str | None
    job_id: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class BulkEdit:
    """A bulk update or bulk delete: the types, the criteria (parsed per type) and what to do."""

    types: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    searches: tuple[SearchQuery, ...]
    patch: Any = None
    hard: bool = False
    purge_history: bool = False


@dataclass(frozen=True)
class Everything:
    """A ``Patient/$everything``: whose compartment (one patient, or every one), which types, and the
    ``_since``, ``start``/``end`` (care dates) and paging it was asked with."""

    patient_id: str | None
    types: tuple[str, ...]
    since: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    count: int = 50
    after: int = 0
    pairs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BundleRequest:
    """A batch or transaction as it was read: its kind, its entries (targets, bytes, parsed searches) and
    the bases its absolute URLs were resolved against."""

    kind: str
    entries: list[Entry]
    bases: Bases


@dataclass(frozen=True)
class FhirRequest:
    """One FHIR request, or one entry of a batch or transaction, as it was read (once)."""

    interaction: Interaction
    partition: str
    method: str
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None
    search: SearchQuery | None = None
    export: ExportSpec | None = None
    type_filters: tuple[SearchQuery, ...] = ()
    import_spec: ImportSpec | None = None
    reindex_types: tuple[str, ...] = ()
    bulk_edit: BulkEdit | None = None
    everything: Everything | None = None
    job: JobTarget | None = None
    bundle: BundleRequest | None = None
    entries: tuple[FhirRequest, ...] = ()
    index: int | None = None
    extra_needs: tuple[Need, ...] = field(default_factory=tuple)

    @property
    def needs(self) -> tuple[Need, ...]:
        """Return every permission this request needs (see ``needs_of``)."""
        return needs_of(self)


def _criterion_needs(criterion: Criterion) -> Iterator[Need]:
    """Yield search access on every type a criterion looks into: chain targets and ``_has`` sources,
    at every depth."""
    for target, inner in zip(criterion.targets, criterion.chain, strict=False):
        yield Need("s", target)
        yield from _criterion_needs(inner)
    if criterion.has is not None:
        source, _code, inner = criterion.has
        yield Need("s", source)
        yield from _criterion_needs(inner)


def reached_needs(query: SearchQuery) -> list[Need]:
    """Return what a parsed search needs beyond its own types: search on every type its criteria look
    into, read on every type its includes can bring in."""
    needs: list[Need] = []
    for criterion in query.criteria:
        needs.extend(_criterion_needs(criterion))
    for include in query.includes:
        needs.extend(Need("r", t) for t in include.reached or (EVERY_TYPE,))
    return needs


def _each(letter: str, types: Iterable[str]) -> list[Need]:
    """Return ``letter`` on each type, or on every type at once when the types are all of them (or none)."""
    listed = list(types)
    if not listed or set(listed) >= resource_types():
        return [Need(letter, EVERY_TYPE)]
    return [Need(letter, t) for t in listed]


def search_needs(query: SearchQuery) -> list[Need]:
    """Return what a parsed search needs: search on its types, and what it reaches."""
    return [*_each("s", query.types), *reached_needs(query)]


def _export_needs(req: FhirRequest) -> list[Need]:
    assert req.export is not None
    needs = _each("r", req.export.types)
    if req.resource_type is not None:
        needs.append(Need("r", req.resource_type))
    for query in req.type_filters:
        needs.extend(reached_needs(query))
    return needs


def _write_needs(req: FhirRequest, letter: str) -> list[Need]:
    assert req.resource_type is not None
    needs = [Need(letter, req.resource_type)]
    if req.search is not None:
        needs.extend(search_needs(req.search))
    return needs


_WRITES = {
    Interaction.CREATE: "c",
    Interaction.UPDATE: "u",
    Interaction.PATCH: "u",
    Interaction.DELETE: "d",
    Interaction.CONDITIONAL_UPDATE: "u",
    Interaction.CONDITIONAL_PATCH: "u",
    Interaction.CONDITIONAL_DELETE: "d",
}
_READS = {Interaction.READ, Interaction.VREAD, Interaction.HISTORY_INSTANCE}
_NOTHING = {
    Interaction.CAPABILITIES,
    Interaction.JOB_STATUS,
    Interaction.JOB_CANCEL,
    Interaction.JOB_FILE,
    Interaction.JOB_LIST,
    Interaction.NOT_ALLOWED,
    Interaction.PUBLIC,
    Interaction.ADMIN,
}


def _needs(req: FhirRequest) -> list[Need]:
    kind = req.interaction
    if kind in _NOTHING:
        return []
    if kind in _READS:
        assert req.resource_type is not None
        return [Need("r", req.resource_type)]
    if kind in _WRITES:
        return _write_needs(req, _WRITES[kind])
    if kind in {Interaction.HISTORY_TYPE, Interaction.HISTORY_SYSTEM}:
        rtype = req.resource_type or EVERY_TYPE
        return [Need("r", rtype), Need("s", rtype)]
    if kind in {Interaction.SEARCH_TYPE, Interaction.SEARCH_SYSTEM}:
        assert req.search is not None
        return search_needs(req.search)
    if kind in {Interaction.BATCH, Interaction.TRANSACTION}:
        return [need for entry in req.entries for need in needs_of(entry)]
    if kind == Interaction.EXPORT:
        return _export_needs(req)
    if kind == Interaction.EVERYTHING:
        # Read on every type the answer may hold: a token without one narrows the request with _type.
        assert req.everything is not None
        return [Need("r", "Patient"), *(Need("r", t) for t in req.everything.types)]
    if kind == Interaction.IMPORT:
        assert req.import_spec is not None
        types = [i.type or EVERY_TYPE for i in req.import_spec.inputs] or [EVERY_TYPE]
        return [Need(letter, t) for letter in "cu" for t in types]
    if kind == Interaction.REINDEX:
        return _each("u", req.reindex_types)
    if kind in {Interaction.BULK_UPDATE, Interaction.BULK_DELETE}:
        assert req.bulk_edit is not None
        letter = "u" if kind == Interaction.BULK_UPDATE else "d"
        needs = [*_each(letter, req.bulk_edit.types), *_each("s", req.bulk_edit.types)]
        for query in req.bulk_edit.searches:
            needs.extend(reached_needs(query))
        return needs
    raise AssertionError(f"no permission rule for {kind}")


def needs_of(req: FhirRequest) -> tuple[Need, ...]:
    """Return the permissions a typed request needs, each once, in a stable order."""
    return tuple(dict.fromkeys([*_needs(req), *req.extra_needs]))


__all__ = [
    "EVERY_TYPE",
    "BulkEdit",
    "BundleRequest",
    "Everything",
    "FhirRequest",
    "Interaction",
    "JobTarget",
    "Need",
    "needs_of",
    "reached_needs",
    "search_needs",
]
