"""The application factory."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import NotFound as UnknownPath
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter

from api.errors import register_error_handlers, unknown_operation
from api.http import negotiate_format, pretty_print
from core.errors import InvalidRequest, NotFound
from core.fhirtypes import resource_types
from core.partition import DEFAULT_PARTITION, validate_partition_name
from core.settings import Settings
from core.urlvalues import is_job_id, version_number
from core.validation import ID_PATTERN
from storage import Database

log = logging.getLogger(__name__)


class ResourceTypeConverter(BaseConverter):
    """Match a path segment shaped like a resource type (checked against R4 in the view)."""

    regex = r"[A-Z][A-Za-z]{1,63}"


# Converters run once the route is chosen; what they raise is the answer (werkzeug keeps an HTTPException
# raised while matching as the request's routing error, which the error handlers turn into an outcome).
class ResourceIdConverter(BaseConverter):
    """A FHIR id (1-64 of A-Z a-z 0-9 - .); anything else is a 400 before it reaches a query."""

    def to_python(self, value: str) -> str:
        if value.startswith("$"):
            raise unknown_operation(value)
        if not ID_PATTERN.fullmatch(value):
            raise BadRequest(f"Invalid resource id {value[:80]!r}: use 1-64 of A-Z a-z 0-9 - .")
        return value


class VersionIdConverter(BaseConverter):
    """A version id, as the integer the version column holds; one no version can have is a 404."""

    def to_python(self, value: str) -> int:
        number = version_number(value)
        if number is None:
            raise UnknownPath(f"No version {value[:80]!r}: version ids are 1 to 2147483647")
        return number

    def to_url(self, value: Any) -> str:
        return str(value)


class JobIdConverter(BaseConverter):
    """A bulk job id (32 lower-case hexadecimal characters); anything else names no job (404)."""

    def to_python(self, value: str) -> str:
        if not is_job_id(value):
            raise UnknownPath(f"No bulk job has the id {value[:80]!r}")
        return value


# C0 controls and DEL; tab, line feed and carriage return may appear in search values (FHIR strings allow
# them), never in the path.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def refuse_control_characters() -> None:
    """Refuse (400) a URL whose path or query holds a control character: no FHIR value contains one."""
    if _PATH_CONTROL.search(request.path):
        raise InvalidRequest("The URL path may not contain control characters")
    for name, value in request.args.items(multi=True):
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise InvalidRequest(f"Query parameter {name[:40]!r} contains a control character")


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
    app = Flask("bulkhead", static_folder=None)
    app.config["BULKHEAD_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.url_map.converters["rtype"] = ResourceTypeConverter
    app.url_map.converters["fhirid"] = ResourceIdConverter
    app.url_map.converters["vid"] = VersionIdConverter
    app.url_map.converters["job"] = JobIdConverter
    app.url_map.strict_slashes = False
    hops = settings.trusted_proxies
    if hops > 0:
        # Forwarded headers are believed only from the configured number of proxies in front; with none
        # configured they are ignored (a client could otherwise pick its audited address and our URLs).
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    if database is None:
        if not settings.database_url:
            raise InvalidRequest("BULKHEAD_DATABASE_URL is not set (bulkhead serve starts an embedded one)")
        database = Database.from_settings(settings)
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
    app.before_request(refuse_control_characters)
    app.before_request(negotiate_format)
    app.after_request(pretty_print)
    register_error_handlers(app)
    from api.security.install import install_security

    install_security(app, settings, database)

    @app.after_request
    def _log(response):  # type: ignore[no-untyped-def]
        log.debug("%s %s -> %s", request.method, request.path, response.status_code)
        return response

    return app
