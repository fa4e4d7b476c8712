"""Bearer tokens: validate JWTs (PyJWT) and mint Bulkhead's own access tokens.

Accepted: HS256 with the shared secret (development), RS256 and ES256 against the configured JWKS (file or
URL) and against Bulkhead's own signing key (tokens its SMART token endpoint issues). The algorithm in the
token header only selects among keys of its own family: ``none``, HS256 without a configured secret, an
HMAC made with a public key, or an RSA header on an EC key are refused before any signature check.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.errors import ServiceUnavailable, Unauthorized
from core.settings import Settings

MAX_TOKEN_BYTES = 8192
ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}
_CURVES = {"ES256": "secp256r1"}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    """Bulkhead's own key for the tokens it issues."""

    private: PrivateKey
    algorithm: str
    kid: str

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Load a PEM private key (RSA → RS256, EC P-256 → ES256)."""
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            algorithm = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
            algorithm = "ES256"
        else:
            raise ValueError(f"{path}: the signing key must be RSA or EC P-256")
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(key, algorithm, "bulkhead-" + hashlib.sha256(der).hexdigest()[:16])

    def public_jwk(self) -> dict[str, Any]:
        """Return the public half as a JWK."""
        algo: Any = jwt.algorithms.get_default_algorithms()[self.algorithm]
        jwk = json.loads(algo.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def _key_fits(key: Any, alg: str) -> bool:
    family = ASYMMETRIC.get(alg)
    if family == "RSA":
        return isinstance(key, rsa.RSAPublicKey)
    if family == "EC":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES[alg]
    return False


class TokenValidator:
    """Validate bearer tokens against the configured keys, issuer and audience."""

    def __init__(self, settings: Settings):
        self.secret = settings.auth_hs256_secret or None
        self.issuer = settings.auth_issuer or None
        self.audience = settings.auth_audience or None
        self.leeway = settings.auth_leeway_seconds
        self.keys: dict[str | None, list[Any]] = {}
        if settings.auth_jwks_file:
            self._add_jwks(json.loads(Path(settings.auth_jwks_file).read_text()))
        self.jwks_client = (
            jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if settings.auth_jwks_url
            else None
        )
        self.own: SigningKey | None = (
            SigningKey.load(Path(settings.auth_signing_key_file)) if settings.auth_signing_key_file else None
        )
        if self.own is not None:
            self.keys.setdefault(self.own.kid, []).append(self.own.private.public_key())

    def _add_jwks(self, data: dict[str, Any]) -> None:
        for item in data.get("keys", []):
            try:
                jwk = jwt.PyJWK(item)
            except jwt.PyJWTError:
                continue
            self.keys.setdefault(item.get("kid"), []).append(jwk.key)

    def _candidates(self, kid: str | None, alg: str) -> list[Any]:
        found = (
            list(self.keys.get(kid, [])) if kid is not None else [k for ks in self.keys.values() for k in ks]
        )
        if not found and self.jwks_client is not None and kid is not None:
            try:
                found = [self.jwks_client.get_signing_key(kid).key]
            except jwt.PyJWKClientConnectionError as exc:
                raise ServiceUnavailable("The token issuer's key set cannot be fetched right now") from exc
            except jwt.PyJWKClientError:
                found = []
        return [k for k in found if _key_fits(k, alg)]

    def validate(self, token: str) -> dict[str, Any]:
        """Return the verified claims of ``token``, or raise Unauthorized saying why."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("The bearer token is too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The bearer token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if alg == "HS256" and self.secret is not None:
            keys: list[Any] = [self.secret]
        elif alg in ASYMMETRIC:
            kid = header.get("kid")
            keys = self._candidates(kid if isinstance(kid, str) else None, alg)
        else:
            raise Unauthorized(f"Tokens signed with {alg!r} are not accepted")
        if not keys:
            raise Unauthorized("No trusted key matches the token's key id and algorithm")
        error: jwt.PyJWTError | None = None
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    issuer=self.issuer,
                    audience=self.audience,
                    leeway=self.leeway,
                    options={"require": ["exp"], "verify_aud": self.audience is not None},
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                error = exc
            except jwt.ExpiredSignatureError as exc:
                raise Unauthorized("The bearer token has expired") from exc
            except jwt.ImmatureSignatureError as exc:
                raise Unauthorized("The bearer token is not valid yet") from exc
            except jwt.InvalidIssuerError as exc:
                raise Unauthorized(
                    "The bearer token comes from an issuer this server does not trust"
                ) from exc
            except jwt.InvalidAudienceError as exc:
                raise Unauthorized("The bearer token is meant for another audience") from exc
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthorized(f"The bearer token lacks the {exc.claim!r} claim") from exc
            except jwt.PyJWTError as exc:
                raise Unauthorized("The bearer token is invalid") from exc
        raise Unauthorized("The bearer token's signature does not verify") from error


def mint_token(
    settings: Settings,
    *,
    partitions: list[str],
    scope: str,
    subject: str,
    lifetime: int | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Return a Bulkhead access token for ``partitions`` with ``scope``, signed with the own key or secret."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.auth_issuer or "bulkhead",
        "sub": subject,
        "client_id": subject,
        "iat": now,
        "nbf": now,
        "exp": now + (lifetime if lifetime is not None else settings.auth_token_lifetime_seconds),
        "jti": uuid.uuid4().hex,
        "scope": scope,
        settings.auth_partitions_claim: partitions,
        **(extra or {}),
    }
    if settings.auth_audience:
        claims["aud"] = settings.auth_audience
    if settings.auth_signing_key_file:
        own = SigningKey.load(Path(settings.auth_signing_key_file))
        return jwt.encode(claims, own.private, algorithm=own.algorithm, headers={"kid": own.kid})
    if settings.auth_hs256_secret:
        return jwt.encode(claims, settings.auth_hs256_secret, algorithm="HS256")
    raise ValueError("Set BULKHEAD_AUTH_SIGNING_KEY_FILE or BULKHEAD_AUTH_HS256_SECRET to mint tokens")
