"""Conditional interactions (If-None-Exist)."""

from __future__ import annotations

from typing import Any

from flask import Response

from core.errors import MethodNotAllowed


def conditional_create(
    partition: str, rtype: str, raw: bytes, resource: dict[str, Any], condition: str
) -> Response:
    """Create unless a resource matches ``condition`` in the partition."""
    raise MethodNotAllowed("Conditional create is not available yet")
