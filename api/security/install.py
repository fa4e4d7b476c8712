"""Install the security layer on the application: tenants and tokens, quotas, audit, metrics, SMART."""

from __future__ import annotations

from flask import Flask

from api.security.audit import init_audit
from api.security.auth import authorize, init_auth
from api.security.metrics import init_metrics
from api.security.quotas import init_quotas
from api.security.smart import init_smart
from core.settings import Settings
from storage import Database


def install_security(app: Flask, settings: Settings, database: Database) -> None:
    """Register the security hooks and endpoints on ``app`` (called once by ``create_app``).

    before_request order: start the request timer, authenticate and admit the token to its partition,
    enforce the partition's quotas, then read the typed request and authorize what it needs; after_request:
    audit and count every answer, refusals included.
    """
    init_metrics(app, database)
    init_auth(app, settings, database)
    init_quotas(app, settings, database)
    app.before_request(authorize)
    init_audit(app, database)
    init_smart(app, settings)
