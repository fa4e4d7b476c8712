"""HTTP helpers shared by the blueprints: bodies, bases, ETags, Prefer and FHIR responses."""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from flask import Response, current_app, request
from werkzeug.exceptions import NotAcceptable

from core.errors import InvalidRequest, Issue, PreconditionFailed, UnsupportedMediaType
from core.fhirjson import dumps, parse_object, pretty
from core.partition import DEFAULT_PARTITION
from core.urlvalues import etag_digits, etag_version, version_number
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


#: The FHIR versions this server speaks, as the ``fhirVersion`` MIME parameter spells them (R4).
_FHIR_VERSIONS = frozenset({"4.0", "4.0.0", "4.0.1"})


def _params(value: str) -> tuple[str, dict[str, str]]:
    """Split one media type into its lower-cased type and parameters (names lower-cased)."""
    kind, *rest = value.split(";")
    params = {}
    for item in rest:
        name, _, val = item.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), params


def json_body() -> tuple[bytes, dict[str, Any]]:
    """Return the request body as raw bytes and parsed object, after checking its content type (and its
    ``fhirVersion``, which must be R4's when given)."""
    mimetype = request.mimetype
    if mimetype not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or '(none)'!r} is not supported; send application/fhir+json"
        )
    version = _params(request.headers.get("Content-Type", ""))[1].get("fhirversion")
    if version is not None and version not in _FHIR_VERSIONS:
        raise UnsupportedMediaType(
            f"Content-Type names fhirVersion={version}; this server speaks FHIR R4 (fhirVersion=4.0)"
        )
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InvalidRequest("The request body is empty")
    return raw, parse_object(raw)


def pretty_print(response: Response) -> Response:
    """Indent a JSON answer for people when the request says ``_pretty=true`` (white space only)."""
    if request.args.get("_pretty", "").lower() != "true":
        return response
    if response.mimetype not in _JSON_TYPES or response.is_streamed or response.direct_passthrough:
        return response
    response.set_data(pretty(response.get_data()))
    return response


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
    if not header:
        return
    usable = False
    for item in header.split(","):
        kind, params = _params(item)
        if params.get("q", "1").strip() in {"0", "0.0", "0.00", "0.000"}:
            continue
        version = params.get("fhirversion")
        if kind in _JSON_TYPES | {"*/*", "application/*"} and (version is None or version in _FHIR_VERSIONS):
            usable = True
    if not usable:
        raise NotAcceptable(
            f"Accept {request.headers['Accept']!r} names no format this server speaks; "
            "ask for application/fhir+json or application/json (FHIR R4, fhirVersion=4.0)"
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


def not_modified(stored: StoredVersion) -> Response | None:
    """Return a 304 when the request's ``If-None-Match`` or ``If-Modified-Since`` says the client holds
    ``stored`` already (RFC 9110: If-None-Match decides when present; an unreadable date is ignored)."""
    headers = version_headers(stored)
    tags = request.headers.get("If-None-Match")
    if tags is not None:
        held = {tag.strip() for tag in tags.split(",")}
        if "*" in held or any(etag_version(tag) == stored.version for tag in held):
            return Response(status=304, headers=headers)
        return None
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return None
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    # Last-Modified is written in whole seconds; compare at that precision.
    if stored.last_updated.replace(microsecond=0) <= when:
        return Response(status=304, headers=headers)
    return None


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
