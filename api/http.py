"""HTTP helpers shared by the blueprints: bodies, bases, ETags, Prefer and FHIR responses."""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime
from typing import Any

from flask import Response, current_app, request
from werkzeug.exceptions import NotAcceptable

from core.errors import InvalidRequest, Issue, PreconditionFailed, UnsupportedMediaType
from core.fhirjson import dumps, parse_object
from core.partition import DEFAULT_PARTITION
from core.urlvalues import etag_digits, version_number
from storage import StoredVersion

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_JSON_FORMATS = {"json", *_JSON_TYPES}
# Blueprints that answer FHIR resources; others (bulk data files, status) negotiate on their own.
FHIR_BLUEPRINTS = frozenset({"fhir", "search", "metadata", "transactions"})


def base_url(partition: str) -> str:
    """Return the absolute FHIR base of ``partition`` as the client sees it."""
    configured = current_app.config["BULKHEAD_SETTINGS"].public_base_url
    root = (configured or request.host_url).rstrip("/")
    if partition == DEFAULT_PARTITION and not request.path.startswith("/partitions/"):
        return root
    return f"{root}/partitions/{partition}"


def server_roots() -> tuple[str, ...]:
    """Return the roots this server is reached under (the configured public base and the request's host)."""
    configured = current_app.config["BULKHEAD_SETTINGS"].public_base_url
    roots = [request.host_url.rstrip("/")]
    if configured:
        roots.insert(0, configured.rstrip("/"))
    return tuple(dict.fromkeys(roots))


def json_body() -> tuple[bytes, dict[str, Any]]:
    """Return the request body as raw bytes and parsed object, after checking its content type."""
    mimetype = request.mimetype
    if mimetype not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or '(none)'!r} is not supported; send application/fhir+json"
        )
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InvalidRequest("The request body is empty")
    return raw, parse_object(raw)


def negotiate_format() -> None:
    """Refuse (406) a FHIR request whose ``_format`` or ``Accept`` asks for anything but JSON."""
    if (request.blueprint or "").removeprefix("p_") not in FHIR_BLUEPRINTS:
        return
    fmt = request.args.get("_format")
    if fmt is not None:
        # A literal "+" in a query string arrives as a space (application/fhir+json).
        if fmt.split(";")[0].strip().replace(" ", "+").lower() not in _JSON_FORMATS:
            raise NotAcceptable(f"_format={fmt!r} is not supported; this server speaks application/fhir+json")
        return
    header = request.headers.get("Accept", "").strip()
    offered = request.accept_mimetypes
    wanted = {value.split(";")[0].strip().lower() for value, quality in offered if quality > 0}
    if header and not wanted & (_JSON_TYPES | {"*/*", "application/*"}):
        raise NotAcceptable(
            f"Accept {request.headers['Accept']!r} names no format this server speaks; "
            "ask for application/fhir+json or application/json"
        )


def if_match_version() -> int | None:
    """Return the version an If-Match header asks for, or None."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    digits = etag_digits(header)
    if digits is None:
        raise PreconditionFailed(f'If-Match {header[:80]!r} is not a version ETag such as W/"1"')
    version = version_number(digits)
    if version is None:
        raise PreconditionFailed(f"If-Match names version {digits[:40]}, which no resource has")
    return version


def prefer_return() -> str:
    """Return the Prefer: return= choice (representation by default)."""
    for part in request.headers.get("Prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "return" and value.strip():
            return value.strip().strip('"')
    return "representation"


def version_headers(stored: StoredVersion) -> dict[str, str]:
    """Return ETag and Last-Modified for a version."""
    return {
        "ETag": f'W/"{stored.version}"',
        "Last-Modified": format_datetime(stored.last_updated.astimezone(UTC), usegmt=True),
    }


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Return a FHIR JSON response; ``body`` is bytes already serialised or a value to serialise."""
    data = body if isinstance(body, bytes) else dumps(body)
    return Response(data, status=status, headers=headers, content_type=FHIR_JSON)


def resource_response(
    stored: StoredVersion, status: int, partition: str, *, location: bool = False, outcome: str | None = None
) -> Response:
    """Return a stored version honouring Prefer: return=, with ETag, Last-Modified and Location."""
    headers = version_headers(stored)
    if location:
        headers["Location"] = (
            f"{base_url(partition)}/{stored.resource_type}/{stored.resource_id}/_history/{stored.version}"
        )
    choice = prefer_return()
    if choice == "minimal":
        return Response(b"", status=status, headers=headers)
    if choice == "OperationOutcome":
        from core.outcome import operation_outcome

        text = outcome or f"{stored.resource_type}/{stored.resource_id} version {stored.version} stored"
        return fhir_response(
            operation_outcome([Issue(text, code="informational", severity="information")]), status, headers
        )
    assert stored.raw is not None
    return fhir_response(stored.raw, status, headers)
