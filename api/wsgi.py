"""WSGI entry point for production servers: ``gunicorn 'api.wsgi:app()'``."""

from __future__ import annotations

from flask import Flask

from api.app import create_app
from core.logs import configure_logging
from core.settings import Settings


def app() -> Flask:
    """Build the application from the environment."""
    settings = Settings.from_env()
    configure_logging(settings)
    return create_app(settings)
