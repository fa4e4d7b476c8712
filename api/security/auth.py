"""Authentication, tenant resolution and authorization of every request.

Two steps:

1. ``TenantMiddleware`` (WSGI, before routing) validates the bearer token and resolves the tenant from the
   URL (default), the ``X-Tenant-ID`` header or the token, as ``tenant_source`` says. A root-base request
   whose tenant comes from the header or the token is routed to ``/partitions/<name>``. When two sources
   name different partitions the request fails with 403.
2. ``admit`` (Flask ``before_request``, after routing) checks that the token may use the routed partition;
   administrators' endpoints need a token whose partitions claim is ``*``. Then the partition's quotas run.
3. ``authorize`` (the last ``before_request``) reads the typed request once (``api.typed``) and checks
   that the token's SMART scopes grant everything it needs (``services.requests.needs_of``); the view runs
   that same typed request.

Authentication is off unless ``auth_enabled``; the start-up log says which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, g, request

from api.typed import current_request, has_reader, routed_partition
from core.errors import BulkheadError, Forbidden, InvalidRequest, Unauthorized
from core.logs import current_job, current_partition
from core.partition import DEFAULT_PARTITION, validate_partition_name
from core.settings import Settings
from services.parse import ADMIN_ENDPOINTS, PUBLIC_ENDPOINTS, SYSTEM_ENDPOINTS, bare_endpoint, route_needs
from services.requests import Need
from services.scopes import Permissions, parse_scope
from services.tokens import TokenValidator
from storage import Database

log = logging.getLogger(__name__)

# Paths outside every partition base: the tenant middleware leaves them alone.
SYSTEM_PATHS = ("/partitions", "/_audit", "/_partition-config", "/_reindex", "/metrics", "/auth/token")


def system_path(path: str) -> str | None:
    """Return the system path ``path`` falls under (``/partitions`` itself, ``/_audit``, …), or None."""
    for prefix in SYSTEM_PATHS:
        if path == prefix or path.startswith(prefix + "/"):
            if prefix == "/partitions" and path not in {prefix, prefix + "/"}:
                return None
            return prefix
    return None


def split_partition(path: str) -> tuple[str | None, str]:
    """Return (partition named in the URL or None for the root base, path below the base)."""
    if path.startswith("/partitions/"):
        name, _, below = path[len("/partitions/") :].partition("/")
        return name, "/" + below
    return None, path


ENV_PRINCIPAL = "bulkhead.principal"
ENV_ERROR = "bulkhead.auth_error"
ENV_TENANT = "bulkhead.tenant"
TENANT_SOURCES = ("url", "header", "token")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the client, the partitions its token may use (None: all) and its scopes."""

    subject: str
    partitions: frozenset[str] | None
    permissions: Permissions
    token_id: str | None = None

    @property
    def admin(self) -> bool:
        """Return True for a token valid in every partition (``*``)."""
        return self.partitions is None

    def may_use(self, partition: str) -> bool:
        """Return True if the token may act in ``partition``."""
        return self.partitions is None or partition in self.partitions

    @classmethod
    def from_claims(cls, claims: dict[str, Any], settings: Settings) -> Principal:
        """Build a principal from verified token claims."""
        raw = claims.get(settings.auth_partitions_claim)
        partitions: frozenset[str] | None
        if raw == "*" or (isinstance(raw, list) and "*" in raw):
            partitions = None
        elif isinstance(raw, str):
            partitions = frozenset(raw.split())
        elif isinstance(raw, list):
            partitions = frozenset(p for p in raw if isinstance(p, str))
        else:
            partitions = frozenset()
        scope = claims.get("scope", claims.get("scp"))
        if scope is not None and not (
            isinstance(scope, str) or (isinstance(scope, list) and all(isinstance(s, str) for s in scope))
        ):
            raise Unauthorized("The token's scope claim must be a string or a list of strings")
        if raw is not None and not isinstance(raw, str | list):
            raise Unauthorized(
                f"The token's {settings.auth_partitions_claim} claim must be a string or a list"
            )
        subject = claims.get("client_id") or claims.get("azp") or claims.get("sub") or "unknown"
        jti = claims.get("jti")
        return cls(
            str(subject)[:256],
            partitions,
            Permissions(parse_scope(scope)),
            jti if isinstance(jti, str) else None,
        )


def bearer_token(header: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, None when there is no header."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Use 'Authorization: Bearer <token>'")
    return token.strip()


class TenantMiddleware:
    """Validate the token and resolve the request's partition before Flask routes it."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], settings: Settings):
        if settings.tenant_source not in TENANT_SOURCES:
            raise ValueError(f"tenant_source must be one of {', '.join(TENANT_SOURCES)}")
        self.wsgi_app = wsgi_app
        self.settings = settings
        self.validator = TokenValidator(settings) if settings.auth_enabled else None
        header = settings.tenant_header.strip()
        self.header_key = "HTTP_" + header.upper().replace("-", "_") if header else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Resolve, then hand over to the application (errors are raised inside it, as OperationOutcomes)."""
        try:
            self._resolve(environ)
        except BulkheadError as exc:
            environ[ENV_ERROR] = exc
        return self.wsgi_app(environ, start_response)

    def _principal(self, environ: dict[str, Any]) -> Principal | None:
        if self.validator is None:
            return None
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is None:
            return None
        principal = Principal.from_claims(self.validator.validate(token), self.settings)
        environ[ENV_PRINCIPAL] = principal
        return principal

    def _resolve(self, environ: dict[str, Any]) -> None:
        principal = self._principal(environ)
        path = environ.get("PATH_INFO") or "/"
        if system_path(path) is not None or not self.settings.partitions_enabled:
            return
        named, _below = split_partition(path)
        header = environ.get(self.header_key) if self.header_key else None
        if header is not None:
            header = header.strip()
            validate_partition_name(header)
        if named is not None:
            if header is not None and header != named:
                raise Forbidden(f"The URL names partition {named!r} but the tenant header names {header!r}")
            environ[ENV_TENANT] = named
            return
        source = self.settings.tenant_source
        chosen = DEFAULT_PARTITION
        if source == "header" and header is not None:
            chosen = header
        elif (
            source == "token"
            and principal is not None
            and principal.partitions
            and len(principal.partitions) == 1
        ):
            chosen = next(iter(principal.partitions))
        if header is not None and header != chosen:
            raise Forbidden(f"The tenant header names {header!r} but the request resolves to {chosen!r}")
        environ[ENV_TENANT] = chosen
        if chosen != DEFAULT_PARTITION:
            environ["PATH_INFO"] = f"/partitions/{chosen}{path}"


def auth_enabled() -> bool:
    """Return True if this application checks bearer tokens."""
    return bool(current_app.config["BULKHEAD_SETTINGS"].auth_enabled)


def current_principal() -> Principal | None:
    """Return the caller of this request (None when authentication is off or no token was sent)."""
    principal: Principal | None = request.environ.get(ENV_PRINCIPAL)
    return principal


def require_principal() -> Principal:
    """Return the caller, or raise Unauthorized when the request carries no token."""
    principal = current_principal()
    if principal is None:
        raise Unauthorized("This server requires a bearer token")
    return principal


def require_admin() -> None:
    """Raise unless the caller is an administrator (a token for every partition); no-op when auth is off."""
    if auth_enabled() and not require_principal().admin:
        raise Forbidden("This endpoint is for administrators (a token whose partitions claim is '*')")


def _endpoint() -> str:
    return bare_endpoint(request.endpoint or "")


def request_partition() -> str | None:
    """Return the partition the current request acts in, or None for system endpoints.

    A routed request's partition is the router's (the URL converter checked it); an unmatched path's is
    read from the path only to decide who may hear its 404.
    """
    if request.url_rule is not None:
        endpoint = _endpoint()
        if endpoint in ADMIN_ENDPOINTS or endpoint in SYSTEM_ENDPOINTS:
            return None
        return routed_partition()
    if system_path(request.path) is not None:
        return None
    named, _ = split_partition(request.path)
    return named or DEFAULT_PARTITION


def admit() -> None:
    """Refuse the request unless its token may act in its partition, or on the system (before_request).

    Runs before the partition's quotas, and before the request's query and body are read.
    """
    error = request.environ.get(ENV_ERROR)
    if error is not None:
        raise error
    settings: Settings = current_app.config["BULKHEAD_SETTINGS"]
    if not settings.auth_enabled:
        return
    endpoint = _endpoint()
    if endpoint in PUBLIC_ENDPOINTS:
        return
    if endpoint in ADMIN_ENDPOINTS:
        if endpoint != "metrics.metrics" or settings.metrics_require_auth:
            require_admin()
        return
    principal = require_principal()
    partition = request_partition() or DEFAULT_PARTITION
    if not principal.may_use(partition):
        raise Forbidden(f"This token is not valid for partition {partition!r}")


def authorize() -> None:
    """Read the typed request and refuse it unless the token's scopes grant all it needs (before_request).

    What is judged here is the object the view then runs (``api.typed.current_request``). An endpoint with
    no reader is refused: a route added without a permission rule fails closed.
    """
    endpoint = _endpoint()
    if request.url_rule is None or endpoint in PUBLIC_ENDPOINTS or endpoint in ADMIN_ENDPOINTS:
        return
    if endpoint in SYSTEM_ENDPOINTS:
        return
    if not has_reader():
        raise Forbidden(f"No permission rule covers {request.method} {request.path}")
    if auth_enabled():
        _check(route_needs(endpoint, request.view_args or {}), endpoint.partition(".")[2])
    typed = current_request()
    if auth_enabled():
        _check(typed.needs, str(typed.interaction))


def _check(needs: Iterable[Need], what_for: str) -> None:
    principal = require_principal()
    for item in needs:
        if not principal.permissions.allows(item.permission, item.resource_type):
            what = "every resource type" if item.resource_type == "*" else item.resource_type
            raise Forbidden(
                f"The token's scopes do not grant {item.permission!r} on {what} (needed for {what_for})"
            )


def _bind_log_context() -> None:
    """Put the request's partition and job id on every log line written while it runs."""
    tokens = [current_partition.set(request_partition())]
    job_id = (request.view_args or {}).get("job_id")
    tokens.append(current_job.set(str(job_id) if job_id is not None else None))
    g.bulkhead_log_tokens = tokens


def _unbind_log_context(_exc: BaseException | None) -> None:
    tokens = g.pop("bulkhead_log_tokens", None)
    if tokens is not None:
        current_job.reset(tokens[1])
        current_partition.reset(tokens[0])


def _challenge(response: Response) -> Response:
    if response.status_code == 401 and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bulkhead", error="invalid_token"'
    return response


def init_auth(app: Flask, settings: Settings, database: Database) -> None:
    """Install tenant resolution and authorization on ``app``; log whether authentication is on."""
    if database.bypasses_row_security():
        log.warning(
            "row-level security is NOT enforced: the database role of BULKHEAD_DATABASE_URL is a superuser "
            "or bypasses RLS; connect as the application role (see README, 'Security')"
        )
    if settings.auth_enabled:
        sources = [
            name
            for name, on in (
                ("HS256 shared secret", settings.auth_hs256_secret),
                ("JWKS file", settings.auth_jwks_file),
                ("JWKS URL", settings.auth_jwks_url),
                ("own signing key", settings.auth_signing_key_file),
            )
            if on
        ]
        if not sources:
            raise InvalidRequest(
                "Authentication is on but no key is configured: set BULKHEAD_AUTH_HS256_SECRET, "
                "BULKHEAD_AUTH_JWKS_FILE, BULKHEAD_AUTH_JWKS_URL or BULKHEAD_AUTH_SIGNING_KEY_FILE"
            )
        log.info(
            "authentication is ON: bearer tokens checked against %s; tenant from the %s",
            ", ".join(sources),
            settings.tenant_source,
        )
    else:
        log.warning(
            "authentication is OFF: every request is served without a token "
            "(set BULKHEAD_AUTH_ENABLED=1 to require bearer tokens); tenant from the %s",
            settings.tenant_source,
        )
    app.wsgi_app = TenantMiddleware(app.wsgi_app, settings)  # type: ignore[method-assign]
    app.before_request(_bind_log_context)
    app.before_request(admit)
    app.teardown_request(_unbind_log_context)
    app.after_request(_challenge)
