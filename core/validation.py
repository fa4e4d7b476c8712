"""Validate FHIR R4 resources: Bulkhead's R4 structural walk, then the fhir.resources R4B models.

Two levels, chosen by the caller:

- ``structural_issues``: the fast walk over the official R4 definitions (``core/r4structure.py``): known
  elements, cardinality, required elements, choice types, JSON kinds and lexical forms of primitives, no
  ``null``/empty values, codes of required bindings, nested resources; plus resourceType and id checks.
- ``full_issues``: the structural walk, then ``fhir.resources.R4B`` (4.3.0, the closest to R4 4.0.1 that
  fhir.resources ships for pydantic 2) for what a model adds (calendar-valid dates and times, base64 that
  decodes, ...). R4B is not asked about the resource types whose R4 definition it does not have or differs
  from (see ``definitions().r4b_differing`` and docs/architecture.md "Validation"); those, and R4B's own
  gaps listed in ``_r4b_false_alarm``, rely on the R4 walk.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache
from typing import Any

from core.errors import InvalidRequest, Issue, Unprocessable
from core.fhirpath_limits import search_parameter_issues
from core.r4structure import Walk, definitions, walk_resource

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class ValidationMode(StrEnum):
    """How thoroughly a write is validated."""

    FULL = "full"
    STRUCTURAL = "structural"
    NONE = "none"


def validate_id(resource_id: str) -> str:
    """Return ``resource_id`` if it is a valid FHIR id, else raise InvalidRequest."""
    if not ID_PATTERN.fullmatch(resource_id):
        raise InvalidRequest(f"Invalid resource id {resource_id!r}: use 1-64 of A-Z a-z 0-9 - .")
    return resource_id


@cache
def r4b_model(resource_type: str) -> Any:
    """Return the fhir.resources R4B model of ``resource_type``, or None where R4B differs from R4."""
    if resource_type in definitions().r4b_differing:
        return None
    try:
        from fhir.resources.R4B import get_fhir_model_class

        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def _walk(resource: dict[str, Any], expected_type: str | None) -> Walk:
    rtype = resource.get("resourceType")
    if expected_type is not None and isinstance(rtype, str) and rtype and rtype != expected_type:
        mismatch = Walk()
        mismatch.issues.append(
            Issue(
                f"resourceType {rtype!r} does not match the type in the URL ({expected_type!r})",
                expression=("resourceType",),
            )
        )
        return mismatch
    return walk_resource(resource)


def structural_issues(resource: dict[str, Any], expected_type: str | None = None) -> list[Issue]:
    """Return the problems found by the fast R4 structural checks."""
    return _walk(resource, expected_type).issues


def without_nested(resource: dict[str, Any]) -> dict[str, Any]:
    """Return ``resource`` without the resources nested in it (each is validated on its own)."""
    rtype = resource.get("resourceType")
    out = resource
    if "contained" in resource:
        out = {k: v for k, v in resource.items() if k != "contained"}
    if rtype == "Bundle" and isinstance(resource.get("entry"), list):
        entries = []
        for entry in resource["entry"]:
            if not isinstance(entry, dict):
                entries.append(entry)
                continue
            shell = {k: v for k, v in entry.items() if k != "resource"}
            response = shell.get("response")
            if isinstance(response, dict) and "outcome" in response:
                shell["response"] = {k: v for k, v in response.items() if k != "outcome"}
            entries.append(shell)
        out = {**out, "entry": entries}
    elif rtype == "Parameters" and isinstance(resource.get("parameter"), list):
        out = {**out, "parameter": [_parameter_shell(p) for p in resource["parameter"]]}
    return out


def _parameter_shell(parameter: Any) -> Any:
    if not isinstance(parameter, dict):
        return parameter
    out = {k: v for k, v in parameter.items() if k != "resource"}
    if isinstance(out.get("part"), list):
        out["part"] = [_parameter_shell(p) for p in out["part"]]
    return out


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _r4b_false_alarm(err: dict[str, Any]) -> bool:
    """Return whether an R4B error is a known gap of the R4B models that valid R4 triggers."""
    loc = tuple(err.get("loc", ()))
    # R4's lexical patterns use XML Schema's \s (space, tab, CR, LF); R4B uses Python's Unicode \s and
    # refuses codes such as "CHEST\u00a0" that R4 allows. The R4 walk has checked every pattern already.
    if err.get("type") == "string_pattern_mismatch":
        return True
    # fhir.resources' Extension has no primitive extensions for value[x] (``_valueString``): R4 allows them.
    if err.get("type") == "extra_forbidden" and loc and str(loc[-1]).startswith("_value"):
        return len(loc) >= 3 and loc[-3] in {"extension", "modifierExtension"}
    return False


def _r4b_issues(resource: dict[str, Any], where: str) -> list[Issue]:
    model = r4b_model(resource["resourceType"])
    if model is None:
        return []
    from pydantic import ValidationError

    try:
        model.model_validate(without_nested(resource))
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            if _r4b_false_alarm(dict(err)):
                continue
            path = _loc(where, tuple(err.get("loc", ())))
            message = str(err.get("msg", "invalid")).replace("\n", " ")
            issues.append(Issue(f"{path}: {message}", code="value", expression=(path,)))
        return issues
    except (ValueError, TypeError, KeyError) as exc:
        return [Issue(f"{where}: {exc}", code="value", expression=(where,))]
    return []


def full_issues(resource: dict[str, Any], expected_type: str | None = None) -> list[Issue]:
    """Return every problem: the R4 structural checks, then the R4B models' (where R4B matches R4)."""
    walk = _walk(resource, expected_type)
    if walk.issues:
        return walk.issues
    issues = _r4b_issues(resource, resource["resourceType"])
    for where, nested in walk.nested:
        issues.extend(_r4b_issues(nested, where))
    return issues


def resource_issues(
    resource: dict[str, Any], expected_type: str | None = None, mode: ValidationMode = ValidationMode.FULL
) -> list[Issue]:
    """Return the problems of ``resource`` at the validation level ``mode``."""
    if mode is ValidationMode.FULL:
        return full_issues(resource, expected_type)
    if mode is ValidationMode.STRUCTURAL:
        return structural_issues(resource, expected_type)
    return []


def check_resource_type(resource: dict[str, Any], expected_type: str | None) -> str:
    """Return the resource's type; raise InvalidRequest if it is missing or not ``expected_type``."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise InvalidRequest(
            "The body has no resourceType",
            issues=[Issue("The body has no resourceType", code="required", expression=("resourceType",))],
        )
    if expected_type is not None and rtype != expected_type:
        text = f"The body's resourceType {rtype!r} does not match the type in the URL ({expected_type!r})"
        raise InvalidRequest(text, issues=[Issue(text, expression=("resourceType",))])
    return rtype


def validate_resource(
    resource: dict[str, Any], expected_type: str | None = None, mode: ValidationMode = ValidationMode.FULL
) -> None:
    """Raise Unprocessable naming each problem of ``resource``, or return if it is valid.

    A missing resourceType, or one that is not ``expected_type``, is a bad request (InvalidRequest). A
    SearchParameter whose expression breaks the limits on tenants' FHIRPath is refused at every level
    (``core/fhirpath_limits.py``): that is not validation but a bound on what the server will evaluate.
    """
    rtype = check_resource_type(resource, expected_type)
    issues = resource_issues(resource, expected_type, mode) + search_parameter_issues(resource)
    if issues:
        raise Unprocessable(f"The {rtype} is invalid", issues=issues)


__all__ = [
    "ID_PATTERN",
    "ValidationMode",
    "check_resource_type",
    "full_issues",
    "r4b_model",
    "resource_issues",
    "structural_issues",
    "validate_id",
    "validate_resource",
    "without_nested",
]
