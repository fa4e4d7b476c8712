"""Validate FHIR resources: fhir.resources R4B models plus the checks they lack.

fhir.resources ships no R4 4.0.1 models in its pydantic-2 releases; ``fhir.resources.R4B`` (4.3.0) is the
closest. Differences handled here (see docs/architecture.md): the R4 types that R4B dropped or renamed are
checked structurally only; codes R4B does not bind (``gender: "xyz"``), ``null`` values and a missing or
mismatching ``resourceType`` are refused by Bulkhead's own checks.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from core.errors import InvalidRequest, Issue, Unprocessable
from core.fhirtypes import resource_types

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Person", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Practitioner", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("RelatedPerson", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Observation", "status"): frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
}


def validate_id(resource_id: str) -> str:
    """Return ``resource_id`` if it is a valid FHIR id, else raise InvalidRequest."""
    if not ID_PATTERN.fullmatch(resource_id):
        raise InvalidRequest(f"Invalid resource id {resource_id!r}: use 1-64 of A-Z a-z 0-9 - .")
    return resource_id


@cache
def _model(resource_type: str) -> Any:
    try:
        from fhir.resources.R4B import get_fhir_model_class

        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def _nulls(value: Any, path: str, out: list[Issue]) -> None:
    if value is None:
        out.append(Issue(f"{path} is null; FHIR JSON never carries null values", expression=(path,)))
    elif isinstance(value, dict):
        for key, item in value.items():
            _nulls(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        if not value:
            out.append(Issue(f"{path} is an empty array", expression=(path,)))
        for i, item in enumerate(value):
            _nulls(item, f"{path}[{i}]", out)


def _loc(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def structural_issues(resource: dict[str, Any], expected_type: str | None = None) -> list[Issue]:
    """Return the problems found by the fast checks: type, id, nulls, required codes."""
    issues: list[Issue] = []
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return [Issue("The resource has no resourceType", code="required", expression=("resourceType",))]
    if rtype not in resource_types():
        return [Issue(f"Unknown resourceType {rtype!r}", code="not-supported", expression=("resourceType",))]
    if expected_type is not None and rtype != expected_type:
        issues.append(
            Issue(
                f"resourceType {rtype!r} does not match the URL's type {expected_type!r}",
                expression=("resourceType",),
            )
        )
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_PATTERN.fullmatch(rid)):
        issues.append(Issue(f"Invalid id {rid!r}", expression=(f"{rtype}.id",)))
    for key, value in resource.items():
        _nulls(value, f"{rtype}.{key}", issues)
        allowed = _REQUIRED_CODES.get((rtype, key))
        if allowed is not None and isinstance(value, str) and value not in allowed:
            issues.append(
                Issue(
                    f"{rtype}.{key} has the unknown code {value!r}",
                    code="code-invalid",
                    expression=(f"{rtype}.{key}",),
                )
            )
    return issues


def full_issues(resource: dict[str, Any], expected_type: str | None = None) -> list[Issue]:
    """Return every problem: the structural checks, then the R4B model's."""
    issues = structural_issues(resource, expected_type)
    if issues:
        return issues
    rtype = resource["resourceType"]
    model = _model(rtype)
    if model is None:
        return issues
    from pydantic import ValidationError

    try:
        model.model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors():
            where = _loc(rtype, tuple(err.get("loc", ())))
            issues.append(Issue(f"{where}: {err.get('msg', 'invalid')}", expression=(where,)))
    except (ValueError, TypeError) as exc:
        issues.append(Issue(f"{rtype}: {exc}"))
    return issues


def validate_resource(resource: dict[str, Any], expected_type: str | None = None) -> None:
    """Raise Unprocessable naming each problem of ``resource``, or return if it is valid."""
    issues = full_issues(resource, expected_type)
    if issues:
        raise Unprocessable(f"The {resource.get('resourceType', 'resource')} is invalid", issues=issues)
