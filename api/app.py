"""The application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter

from api.errors import register_error_handlers
from api.http import negotiate_format
from core.errors import InvalidRequest, NotFound
from core.fhirtypes import resource_types
from core.partition import DEFAULT_PARTITION, validate_partition_name
from core.settings import Settings
from storage import Database

log = logging.getLogger(__name__)


class ResourceTypeConverter(BaseConverter):
    """Match a path segment shaped like a resource type (checked against R4 in the view)."""

    regex = r"[A-Z][A-Za-z]{1,63}"


def _check_partition(endpoint: str | None, values: dict[str, Any] | None) -> None:
    if values is None:
        return
    if "partition" in values:
        validate_partition_name(values["partition"])
    rtype = values.get("rtype")
    if rtype is not None and rtype not in resource_types():
        raise NotFound(f"Unknown resource type {rtype!r}")


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    """Build the Flask app: blueprints at the root (partition default) and under /partitions/<name>."""
    settings = settings or Settings.from_env()
    app = Flask("bulkhead")
    app.config["BULKHEAD_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.url_map.converters["rtype"] = ResourceTypeConverter
    app.url_map.strict_slashes = False
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
    if database is None:
        if not settings.database_url:
            raise InvalidRequest("BULKHEAD_DATABASE_URL is not set (bulkhead serve starts an embedded one)")
        database = Database(
            settings.database_url,
            statement_timeout=settings.database_statement_timeout_seconds,
            idle_in_transaction_timeout=settings.database_idle_in_transaction_timeout_seconds,
        )
    app.extensions["bulkhead.db"] = database
    if not settings.partitions_enabled and database.partitions_holding_data() > 1:
        raise RuntimeError("Partitions cannot be turned off: data lives in more than one partition")

    from api import bulk_export, bulk_ops, fhir, metadata, search_routes, transactions

    blueprints = [metadata.bp, search_routes.bp, bulk_export.bp, bulk_ops.bp, fhir.bp, transactions.bp]
    for bp in blueprints:
        app.register_blueprint(bp, url_defaults={"partition": DEFAULT_PARTITION})
        if settings.partitions_enabled:
            app.register_blueprint(bp, url_prefix="/partitions/<partition>", name=f"p_{bp.name}")
    app.register_blueprint(metadata.admin_bp)
    app.register_blueprint(bulk_ops.admin_bp)
    app.url_value_preprocessor(_check_partition)
    app.before_request(negotiate_format)
    register_error_handlers(app)
    from api.auth_install import install_security

    install_security(app, settings, database)

    @app.after_request
    def _log(response):  # type: ignore[no-untyped-def]
        log.debug("%s %s -> %s", request.method, request.path, response.status_code)
        return response

    return app
