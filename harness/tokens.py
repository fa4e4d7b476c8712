"""Keys and tokens for tests of an application with authentication on."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.settings import Settings

ISSUER = "https://issuer.bulkhead.test"
AUDIENCE = "https://bulkhead.test"
HS_SECRET = "test-shared-secret-" + "0123456789abcdef" * 4


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    """Return the public JWK of a private key."""
    algo: Any = jwt.algorithms.get_default_algorithms()[alg]
    return {**json.loads(algo.to_jwk(key.public_key())), "kid": kid, "alg": alg, "use": "sig"}


@dataclass(frozen=True)
class AuthKeys:
    """The keys of a test run: an RSA and an EC key in a JWKS file, a shared secret, a signing key file."""

    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    jwks_file: Path
    signing_key_file: Path
    secret: str = HS_SECRET

    @classmethod
    def create(cls, directory: Path) -> AuthKeys:
        """Generate keys and write the JWKS and the server's signing key under ``directory``."""
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        jwks = {"keys": [public_jwk(rsa_key, "rsa-1", "RS256"), public_jwk(ec_key, "ec-1", "ES256")]}
        jwks_file = directory / "jwks.json"
        jwks_file.write_text(json.dumps(jwks))
        signing = directory / "signing-key.pem"
        signing.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
        return cls(rsa_key, ec_key, jwks_file, signing)

    def settings(self, base: Settings, **overrides: Any) -> Settings:
        """Return ``base`` with authentication on and these keys trusted."""
        return replace(
            base,
            auth_enabled=True,
            auth_hs256_secret=self.secret,
            auth_jwks_file=self.jwks_file,
            auth_signing_key_file=self.signing_key_file,
            auth_issuer=ISSUER,
            auth_audience=AUDIENCE,
            **overrides,
        )

    def claims(
        self, partitions: list[str] | str, scope: str = "system/*.cruds", lifetime: int = 300, **extra: Any
    ) -> dict[str, Any]:
        """Return a valid claim set."""
        now = int(time.time())
        return {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "test-client",
            "client_id": "test-client",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "scope": scope,
            "partitions": partitions,
            **extra,
        }

    def hs256(self, partitions: list[str] | str, scope: str = "system/*.cruds", **extra: Any) -> str:
        """Return an HS256 token signed with the shared secret."""
        return jwt.encode(self.claims(partitions, scope, **extra), self.secret, algorithm="HS256")

    def rs256(self, partitions: list[str] | str, scope: str = "system/*.cruds", **extra: Any) -> str:
        """Return an RS256 token signed with the JWKS's RSA key."""
        return jwt.encode(
            self.claims(partitions, scope, **extra), self.rsa, algorithm="RS256", headers={"kid": "rsa-1"}
        )

    def es256(self, partitions: list[str] | str, scope: str = "system/*.cruds", **extra: Any) -> str:
        """Return an ES256 token signed with the JWKS's EC key."""
        return jwt.encode(
            self.claims(partitions, scope, **extra), self.ec, algorithm="ES256", headers={"kid": "ec-1"}
        )

    def admin(self, scope: str = "system/*.cruds") -> str:
        """Return a token valid in every partition."""
        return self.hs256("*", scope)

    def client(self, client_id: str, partitions: list[str] | str, scope: str = "system/*.cruds") -> str:
        """Return a token of the client ``client_id`` (its ``client_id`` and ``sub`` claims)."""
        return self.hs256(partitions, scope, client_id=client_id, sub=client_id)


def b64url(data: bytes) -> str:
    """Return unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any]) -> str:
    """Return an ``alg: none`` token (no signature)."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def hmac_with_public_key(claims: dict[str, Any], public_pem: bytes, kid: str = "rsa-1") -> str:
    """Return an HS256 token whose HMAC key is a public key's PEM (the algorithm-confusion attack)."""
    import hashlib
    import hmac

    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def bearer(token: str) -> dict[str, str]:
    """Return an Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def _tampered(auth_keys: AuthKeys, partition: str) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(auth_keys.claims([partition]), other, algorithm="RS256", headers={"kid": "rsa-1"})


BAD_TOKENS = {
    "expired": lambda k, p: k.hs256([p], lifetime=-3600),
    "not yet valid": lambda k, p: jwt.encode({**k.claims([p]), "nbf": k.claims([p])["iat"] + 3600}, k.secret),
    "wrong issuer": lambda k, p: k.hs256([p], iss="https://evil.test"),
    "wrong audience": lambda k, p: k.hs256([p], aud="https://elsewhere.test"),
    "no expiry": lambda k, p: jwt.encode({c: v for c, v in k.claims([p]).items() if c != "exp"}, k.secret),
    "unsigned alg none": lambda k, p: unsigned_token(k.claims([p])),
    "wrong secret": lambda k, p: jwt.encode(k.claims([p]), "another-secret-" + "f" * 64),
    "signed by an unknown RSA key": _tampered,
    "HMAC with the RSA public key": lambda k, p: hmac_with_public_key(
        k.claims([p]),
        k.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ),
    "RS256 header on the EC key": lambda k, p: _swap_header(k.es256([p]), {"alg": "RS256", "kid": "ec-1"}),
    "HS512": lambda k, p: jwt.encode(k.claims([p]), k.secret, algorithm="HS512"),
    "oversized": lambda k, p: k.hs256([p], padding="x" * 9000),
    "garbage": lambda k, p: "not.a.jwt",
}


def _swap_header(token: str, header: dict[str, str]) -> str:
    import json

    from harness.tokens import b64url

    _h, payload, signature = token.split(".")
    return ".".join([b64url(json.dumps({**header, "typ": "JWT"}).encode()), payload, signature])
