"""The FHIR R4 (4.0.1) resource types, read from the data shipped with Bulkhead."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from core.errors import NotFound

FHIR_VERSION = "4.0.1"


@cache
def resource_types() -> frozenset[str]:
    """Return every concrete R4 resource type name."""
    text = resources.files("core").joinpath("data/resource_types.json").read_text("utf-8")
    return frozenset(json.loads(text))


def require_type(name: str) -> str:
    """Return ``name`` if it is an R4 resource type, else raise NotFound."""
    if name not in resource_types():
        raise NotFound(f"Unknown resource type {name!r}")
    return name
