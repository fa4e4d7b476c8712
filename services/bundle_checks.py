"""Checks of a transaction Bundle before it runs: each resource is written at most once."""

from __future__ import annotations

from core.errors import BulkheadError, InvalidRequest, Issue
from services.bundle_entries import Entry


def relabel(exc: BulkheadError, entry: Entry) -> BulkheadError:
    """Return ``exc`` with its messages and locations naming the entry that failed."""
    prefix = f"Bundle.entry[{entry.index}]"

    def rebase(expression: str) -> str:
        if entry.rtype and (expression == entry.rtype or expression.startswith(entry.rtype + ".")):
            return f"{prefix}.resource{expression[len(entry.rtype) :]}"
        if expression == "resourceType":
            return f"{prefix}.resource.resourceType"
        return expression

    issues = [
        Issue(
            f"{entry.label}: {issue.diagnostics}",
            code=issue.code,
            severity=issue.severity,
            expression=tuple(rebase(e) for e in issue.expression) or (prefix,),
        )
        for issue in exc.issues
    ]
    labelled = BulkheadError(f"{entry.label}: {exc.message}", issues=issues, retry_after=exc.retry_after)
    labelled.status, labelled.code = exc.status, exc.code
    return labelled


def check_overlaps(entries: list[Entry]) -> None:
    """Refuse two entries that write the same resource (their targets known once conditions are resolved)."""
    seen: dict[str, Entry] = {}
    for entry in entries:
        if entry.method in {"GET", "HEAD"} or entry.target is None:
            continue
        other = seen.get(entry.target)
        if other is not None:
            raise relabel(
                InvalidRequest(
                    f"{entry.target} is also written by Bundle.entry[{other.index}]; "
                    "a transaction may touch each resource once"
                ),
                entry,
            )
        seen[entry.target] = entry


def _criteria_key(entry: Entry) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """Return (type, sorted criteria) of a conditional write that may create, None for any other entry.

    (Conditional patches resolve to existing resources, which the overlap check compares; a conditional
    delete runs before the writes and may be followed by a conditional update that replaces its match.)
    """
    if entry.method == "POST" and entry.condition is not None:
        criteria = entry.condition
    elif entry.conditional and entry.method == "PUT" and entry.search is not None:
        criteria = entry.search
    else:
        return None
    return (entry.rtype or "", tuple(sorted(criteria.applied)))


def check_same_criteria(entries: list[Entry]) -> None:
    """Refuse two conditional creates or updates with the same criteria: with no match, each would create."""
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], Entry] = {}
    for entry in entries:
        key = _criteria_key(entry)
        if key is None:
            continue
        other = seen.get(key)
        if other is not None:
            raise relabel(
                InvalidRequest(
                    f"Bundle.entry[{other.index}] has the same conditional criteria; "
                    "a transaction may touch each resource once"
                ),
                entry,
            )
        seen[key] = entry
