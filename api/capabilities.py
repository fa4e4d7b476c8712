"""Search parameters advertised in the CapabilityStatement."""

from __future__ import annotations

from typing import Any


def search_params_for(rtype: str) -> list[dict[str, Any]]:
    """Return the CapabilityStatement searchParam entries of ``rtype``."""
    return [
        {"name": "_id", "type": "token"},
        {"name": "_lastUpdated", "type": "date"},
    ]
