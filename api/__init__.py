"""The HTTP layer: the Flask application, its blueprints and hooks, errors as OperationOutcomes."""

from __future__ import annotations

from api.app import create_app

__all__ = ["create_app"]
