"""The HTTP layer: Flask application, FHIR REST and bulk operation endpoints, the CLI."""

from __future__ import annotations

from api.app import create_app

__all__ = ["create_app"]
