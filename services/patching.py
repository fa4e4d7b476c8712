"""Patch bodies of the PATCH interaction: FHIRPath Patch (a ``Parameters`` resource) or JSON Patch.

Nothing here talks HTTP: ``patch_from_body`` takes the media type and bytes of a request, ``patch_from_entry``
the resource of a batch or transaction entry (a ``Parameters`` body, or a ``Binary`` whose ``contentType`` is
``application/json-patch+json`` and whose ``data`` is the base64 JSON Patch document).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from core.errors import InvalidRequest, UnsupportedMediaType
from core.fhirpatch import apply_patch, parse_patch
from core.jsonpatch import apply_json_patch, parse_json_patch

JSON_PATCH = "application/json-patch+json"
FHIRPATH_PATCH_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})


@dataclass(frozen=True)
class Patch:
    """A parsed patch: what kind it is, and the function that returns a patched copy of a resource."""

    kind: str
    apply: Callable[[dict[str, Any]], dict[str, Any]]


def _load(data: bytes, what: str) -> Any:
    if not data.strip():
        raise InvalidRequest(f"The {what} is empty")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The {what} is not valid JSON: {exc}") from None


def json_patch(document: Any) -> Patch:
    """Return the Patch of a parsed JSON Patch document (InvalidRequest when it is malformed)."""
    ops = parse_json_patch(document)
    return Patch("json-patch", lambda resource: apply_json_patch(resource, ops))


def fhirpath_patch(parameters: Any) -> Patch:
    """Return the Patch of a parsed FHIRPath Patch ``Parameters`` resource."""
    ops = parse_patch(parameters)
    return Patch("fhirpath-patch", lambda resource: apply_patch(resource, ops))


def patch_from_body(media_type: str | None, data: bytes) -> Patch:
    """Return the Patch a request body carries, chosen by its media type (415 for any other type)."""
    kind = (media_type or "").split(";")[0].strip().lower()
    if kind == JSON_PATCH:
        return json_patch(_load(data, "JSON Patch document"))
    if kind in FHIRPATH_PATCH_TYPES:
        return fhirpath_patch(_load(data, "FHIRPath Patch body"))
    raise UnsupportedMediaType(
        f"PATCH takes {JSON_PATCH} (JSON Patch) or application/fhir+json (a FHIRPath Patch Parameters "
        f"resource), not {media_type or '(no Content-Type)'!r}"
    )


def patch_from_entry(resource: Any) -> Patch:
    """Return the Patch of a Bundle entry's resource: a Parameters resource or a Binary holding JSON Patch."""
    if not isinstance(resource, dict):
        raise InvalidRequest("A PATCH entry needs a resource: a Parameters (FHIRPath Patch) or a Binary")
    if resource.get("resourceType") == "Parameters":
        return fhirpath_patch(resource)
    if resource.get("resourceType") != "Binary":
        raise InvalidRequest(
            "A PATCH entry's resource is a Parameters (FHIRPath Patch) or a Binary (JSON Patch), "
            f"not {resource.get('resourceType')!r}"
        )
    content_type = resource.get("contentType")
    if not isinstance(content_type, str) or content_type.split(";")[0].strip().lower() != JSON_PATCH:
        raise UnsupportedMediaType(f"A PATCH entry's Binary must have contentType {JSON_PATCH}")
    data = resource.get("data")
    if not isinstance(data, str):
        raise InvalidRequest("A PATCH entry's Binary has no data")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("A PATCH entry's Binary.data is not base64") from None
    return json_patch(_load(decoded, "JSON Patch document"))


__all__ = ["JSON_PATCH", "Patch", "fhirpath_patch", "json_patch", "patch_from_body", "patch_from_entry"]
