"""The FHIR OperationOutcome of a list of issues: one builder, for HTTP answers and for failed jobs."""

from __future__ import annotations

from typing import Any

from core.errors import Issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """Build an OperationOutcome resource (as JSON) from issues."""
    out: list[dict[str, Any]] = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            item["expression"] = list(issue.expression)
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}


__all__ = ["operation_outcome"]
