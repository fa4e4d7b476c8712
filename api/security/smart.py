"""SMART Backend Services: discovery (``.well-known/smart-configuration``) and the token endpoint.

A registered client posts ``grant_type=client_credentials`` with a JWT assertion signed by its own key
(``private_key_jwt``; RS384 or ES384, RS256/ES256 accepted too). Bulkhead checks the assertion (issuer and
subject = client id, audience = this token endpoint, expiry at most five minutes ahead, a jti never seen
before), narrows the requested scopes to the client's registered ones, and issues an access token for the
client's partition. Errors follow OAuth 2.0 (RFC 6749 §5.2), not OperationOutcome.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import jwt
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from api.http import base_url, fhir_response
from core.errors import NotFound
from core.settings import Settings
from services.scopes import Permissions, narrow, parse_scope
from services.tokens import mint_token
from storage import Database
from storage.smart_clients import SmartClient, find_client, remember_assertion

log = logging.getLogger(__name__)
bp = Blueprint("smart", __name__)
token_bp = Blueprint("smart_token", __name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = {"RS384": "RSA", "ES384": "EC", "RS256": "RSA", "ES256": "EC"}
MAX_ASSERTION_SECONDS = 300
TOKEN_PATH = "/auth/token"


def _settings() -> Settings:
    settings: Settings = current_app.config["BULKHEAD_SETTINGS"]
    return settings


def token_endpoint_url() -> str:
    """Return the absolute URL of the token endpoint as clients see it."""
    root = (_settings().public_base_url or request.host_url).rstrip("/")
    return root + TOKEN_PATH


@bp.get("/.well-known/smart-configuration")
def smart_configuration(partition: str) -> Response:
    """Describe how backend services obtain tokens for this FHIR base."""
    if not _settings().auth_enabled:
        raise NotFound("Authentication is off on this server: no token is needed")
    body = {
        "issuer": _settings().auth_issuer or "bulkhead",
        "token_endpoint": token_endpoint_url(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": [
            "system/*.cruds",
            "system/*.rs",
            "system/*.read",
            "system/*.write",
            "system/*.*",
        ],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "code_challenge_methods_supported": [],
        "fhir_base": base_url(partition),
    }
    response = fhir_response(body)
    response.content_type = "application/json"
    return response


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _oauth_response(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _client_keys(client: SmartClient, kid: str | None, alg: str) -> list[Any]:
    family = ASSERTION_ALGORITHMS[alg]
    keys: list[Any] = []
    if client.jwks is not None:
        for item in client.jwks.get("keys", []):
            if kid is not None and item.get("kid") != kid:
                continue
            if item.get("kty") != family:
                continue
            try:
                keys.append(jwt.PyJWK(item).key)
            except jwt.PyJWTError:
                continue
    if not keys and client.jwks_url and kid is not None:
        try:
            keys.append(jwt.PyJWKClient(client.jwks_url, timeout=5).get_signing_key(kid).key)
        except jwt.PyJWKClientError as exc:
            raise OAuthError("invalid_client", "The client's key set has no usable key", 401) from exc
    return keys


def _verify_assertion(database: Database, assertion: str) -> SmartClient:
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_client", "The client assertion is not a well-formed JWT", 401) from exc
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise OAuthError("invalid_client", f"Client assertions signed with {alg!r} are not accepted", 401)
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or unverified.get("sub") != client_id:
        raise OAuthError("invalid_client", "The assertion's iss and sub must both be the client id", 401)
    client = find_client(database, client_id)
    if client is None or not client.enabled:
        raise OAuthError("invalid_client", "Unknown or disabled client", 401)
    keys = _client_keys(client, header.get("kid") if isinstance(header.get("kid"), str) else None, alg)
    claims: dict[str, Any] | None = None
    for key in keys:
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[alg],
                audience=token_endpoint_url(),
                issuer=client_id,
                leeway=_settings().auth_leeway_seconds,
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"The client assertion is invalid: {exc}", 401) from exc
    if claims is None:
        raise OAuthError("invalid_client", "The client assertion's signature does not verify", 401)
    if int(claims["exp"]) > time.time() + MAX_ASSERTION_SECONDS + _settings().auth_leeway_seconds:
        raise OAuthError("invalid_client", "The client assertion must expire within five minutes", 401)
    expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
    if not remember_assertion(database, client_id, str(claims["jti"])[:256], expires):
        raise OAuthError("invalid_client", "This client assertion (jti) was already used", 401)
    return client


@token_bp.post(TOKEN_PATH)
def token() -> Response:
    """Exchange a signed client assertion for an access token (client_credentials)."""
    settings = _settings()
    try:
        if not settings.auth_enabled:
            raise OAuthError("invalid_request", "Authentication is off on this server", 400)
        form = request.form
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "Only client_credentials is supported")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise OAuthError("invalid_client", f"Send a client_assertion of type {ASSERTION_TYPE}", 401)
        database: Database = current_app.extensions["bulkhead.db"]
        client = _verify_assertion(database, form["client_assertion"])
        requested = parse_scope(form.get("scope", ""))
        granted = narrow(requested, parse_scope(client.scope))
        if not granted:
            raise OAuthError("invalid_scope", "None of the requested scopes is allowed for this client")
        scope = Permissions(granted).scope_string()
        lifetime = settings.auth_token_lifetime_seconds
        try:
            access = mint_token(
                settings,
                partitions=[client.partition],
                scope=scope,
                subject=client.client_id,
                lifetime=lifetime,
            )
        except ValueError as exc:
            raise OAuthError("server_error", "The server has no key to sign tokens with", 503) from exc
    except OAuthError as exc:
        log.info("token request refused: %s", exc.description)
        return _oauth_response({"error": exc.error, "error_description": exc.description}, exc.status)
    log.info("issued a token to client %s", client.client_id, extra={"partition": client.partition})
    return _oauth_response(
        {"access_token": access, "token_type": "bearer", "expires_in": lifetime, "scope": scope}
    )


def init_smart(app: Flask, settings: Settings) -> None:
    """Register discovery under every FHIR base and the token endpoint at the root."""
    from core.partition import DEFAULT_PARTITION

    app.register_blueprint(bp, url_defaults={"partition": DEFAULT_PARTITION})
    if settings.partitions_enabled:
        app.register_blueprint(bp, url_prefix="/partitions/<partition>", name="p_smart")
    app.register_blueprint(token_bp)
