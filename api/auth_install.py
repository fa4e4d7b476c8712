"""Install the security layer on the application: tenants and tokens, quotas, audit, metrics, SMART."""

from __future__ import annotations

from flask import Flask

from api.auth import init_auth
from core.settings import Settings
from storage import Database


def install_security(app: Flask, settings: Settings, database: Database) -> None:
    """Register the security hooks and endpoints on ``app`` (called once by ``create_app``)."""
    init_auth(app, settings, database)
