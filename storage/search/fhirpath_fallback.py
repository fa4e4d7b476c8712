"""The slow path for FHIRPath outside the compiled subset: fhirpathpy with its R4 model, within bounds.

About 100x slower than a compiled accessor (some 70 us per evaluation). The FHIR type of each result is
guessed from its JSON shape (``guess_type``), since fhirpathpy returns plain JSON values.

Only tenants' own SearchParameters come here, so the expression must be within the limits of
``core/fhirpath_limits.py`` (one stored before those limits is not indexed), regexes run on RE2 and each
evaluation has a CPU budget (``core/fhirpath_guard.py``): past it the accessor raises ``TooCostly``, which
extraction counts as a skip of that parameter for that resource.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from core.fhirpath_guard import TooCostly, compile_bounded
from core.fhirpath_limits import PER_EVALUATION_SECONDS, expression_problems
from storage.search.fhirpath_steps import Compiled, Item

log = logging.getLogger(__name__)


def fallback(text: str) -> Compiled:
    """Compile ``text`` with fhirpathpy, or return a Compiled without accessor when it cannot."""
    from fhirpathpy.models import models

    problems = expression_problems(text)
    if problems:
        log.warning("FHIRPath %r is refused, the parameter is not indexed: %s", text, "; ".join(problems))
        return Compiled(None, "none")
    try:
        evaluate = compile_bounded(text, model=models["r4"], seconds=PER_EVALUATION_SECONDS)
    except Exception as exc:
        log.warning("FHIRPath %r cannot be compiled, the parameter is not indexed: %s", text, exc)
        return Compiled(None, "none")

    def run(resource: dict[str, Any]) -> list[Item]:
        try:
            values = evaluate(resource)
        except TooCostly:
            raise
        except Exception:
            return []
        return [(v, guess_type(v)) for v in values if v is not None]

    return Compiled(run, "fhirpathpy", None, text)


_DATE_SHAPE = re.compile(r"\d{4}(-\d{2}(-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?")
_SHAPES: list[tuple[frozenset[str], str]] = [
    (frozenset({"reference"}), "Reference"),
    (frozenset({"coding"}), "CodeableConcept"),
    (frozenset({"family"}), "HumanName"),
    (frozenset({"given"}), "HumanName"),
    (frozenset({"line"}), "Address"),
    (frozenset({"city"}), "Address"),
    (frozenset({"start"}), "Period"),
    (frozenset({"end"}), "Period"),
    (frozenset({"low"}), "Range"),
    (frozenset({"high"}), "Range"),
    (frozenset({"currency"}), "Money"),
    (frozenset({"url", "value"}), "Extension"),
    (frozenset({"value", "unit"}), "Quantity"),
    (frozenset({"value", "code"}), "Quantity"),
    (frozenset({"system", "code"}), "Coding"),
    (frozenset({"code"}), "Coding"),
    (frozenset({"system", "value"}), "Identifier"),
    (frozenset({"value"}), "Identifier"),
    (frozenset({"text"}), "CodeableConcept"),
]


def guess_type(value: Any) -> str:
    """Guess the FHIR type of a JSON value from its shape (used for fhirpathpy results)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        return "dateTime" if _DATE_SHAPE.fullmatch(value) else "string"
    if isinstance(value, dict):
        if "resourceType" in value:
            return str(value["resourceType"])
        keys = value.keys()
        if any(k.startswith("value") and k != "value" for k in keys) and "url" in keys:
            return "Extension"
        for needed, name in _SHAPES:
            if needed <= keys:
                return name
    return "Element"
