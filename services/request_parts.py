"""What a typed request is read from: the routed endpoint and the raw parts of an HTTP request (no Flask)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidRequest, UnsupportedMediaType
from core.fhirjson import parse_object
from services.export_params import prefers
from services.requests import FhirRequest, Interaction
from storage.search import SearchQuery, SearchRegistry, parse_search

Registry = Callable[[], SearchRegistry]
_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
JOB_KINDS = ("export", "import", "reindex", "bulk-update", "bulk-delete")


@dataclass(frozen=True)
class RequestParts:
    """What a typed request is read from: the routed endpoint and the raw parts of the HTTP request."""

    endpoint: str
    method: str
    partition: str
    view_args: Mapping[str, Any] = field(default_factory=dict)
    args: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    mimetype: str = ""
    roots: tuple[str, ...] = ()
    max_page_size: int = 1000
    max_transaction_entries: int = 1000

    def header(self, name: str) -> str | None:
        """Return a header's value (names are compared case-insensitively)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def lenient(self) -> bool:
        """Return whether the client asked for ``Prefer: handling=lenient``."""
        return prefers(self.header("Prefer")).get("handling") == "lenient"

    @property
    def reading(self) -> bool:
        """Return whether the method reads (GET or HEAD)."""
        return self.method in {"GET", "HEAD"}


Reader = Callable[[RequestParts, Registry], FhirRequest]


def typed(parts: RequestParts, interaction: Interaction, **fields: Any) -> FhirRequest:
    return FhirRequest(interaction, parts.partition, parts.method, **fields)


#: Parameters every FHIR interaction takes (how the answer is written).
FORMAT_PARAMS = frozenset({"_format", "_pretty"})


def refuse_unknown_params(parts: RequestParts, allowed: frozenset[str], what: str) -> None:
    """Refuse (400) query parameters ``what`` does not take, unless the client asked for leniency."""
    if parts.lenient:
        return
    unknown = sorted({name for name, _ in parts.args if name not in allowed | FORMAT_PARAMS})
    if unknown:
        raise InvalidRequest(
            f"{what} takes no parameter {', '.join(repr(n) for n in unknown)}"
            + (f" (it takes {', '.join(sorted(allowed))})" if allowed else "")
        )


def json_object(parts: RequestParts) -> dict[str, Any]:
    """Return the JSON body (415 for another content type, 400 for no or malformed JSON)."""
    if parts.mimetype not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {parts.mimetype or '(none)'!r} is not supported; send application/fhir+json"
        )
    if not parts.body.strip():
        raise InvalidRequest("The request body is empty")
    return parse_object(parts.body)


def criteria(registry: Registry, rtype: str, pairs: list[tuple[str, str]], what: str) -> SearchQuery:
    """Parse search criteria (no result parameters); refuse criteria that name no search parameter."""
    query = parse_search(registry(), [rtype], pairs, criteria_only=True)
    if not query.criteria:
        raise InvalidRequest(f"The {what} names no search parameters")
    return query


__all__ = ["Reader", "Registry", "RequestParts", "criteria", "json_object", "typed"]
