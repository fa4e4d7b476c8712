"""What keeps SeaweedFS's own ports shut to every client but its own components.

``weed mini`` runs a master, a volume server, a filer, an admin server and the S3 gateway in one process,
and each listens on an HTTP and a gRPC port. Only the S3 gateway (which checks AWS signatures) is meant
for clients. At every start a fresh certificate authority signs one certificate that every component
presents and demands (mutual TLS on every HTTP and gRPC port but the gateway's); the authority's key is
never written. Reads and writes on the volume server and the filer also need a JWT signed with keys made
at the same time. All of it lives in ``security.toml`` and a ``tls`` directory, readable by the owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cli.embedded.secretfiles import new_secret, private_directory, write_private

#: Components whose gRPC server and client present the certificate (``[grpc.<name>]``).
_GRPC = ("master", "volume", "filer", "s3", "admin", "worker", "client")
#: Components whose HTTP server demands a client certificate (``[https.<name>]``).
_HTTPS = ("master", "volume", "filer", "admin")
#: JWT keys: master → volume server (writes, reads), S3 gateway → filer (writes, reads).
_JWT = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
_VALID_FOR = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class TlsFiles:
    """The certificate authority's certificate, and the one certificate (with its key) it signed."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def write_tls(directory: Path) -> TlsFiles:
    """Make a fresh certificate authority and a certificate it signs for every component (as server and
    as client); write both certificates and the component key (mode 0600); forget the authority's key."""
    private_directory(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Bulkhead embedded SeaweedFS CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("bulkhead-seaweedfs"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "component.crt", directory / "component.key")
    write_private(files.ca, _pem(ca))
    write_private(files.cert, _pem(cert))
    write_private(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )
    return files


def _toml(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def security_toml(tls: TlsFiles, *, admin_password: str) -> str:
    """Return the ``security.toml`` that locks every component: JWT keys made now, mutual TLS with ``tls``
    on every gRPC port and every HTTP port but the S3 gateway's, no volume UI, no directory listings."""
    pair: dict[str, str | bool] = {"cert": str(tls.cert), "key": str(tls.key)}
    mutual = {**pair, "ca": str(tls.ca)}
    sections: list[tuple[str, dict[str, str | bool]]] = [(table, {"key": new_secret()}) for table in _JWT]
    sections += [
        ("access", {"ui": False}),
        ("filer.expose_directory_metadata", {"enabled": False}),
        ("grpc", {"ca": str(tls.ca)}),
        *((f"grpc.{name}", pair) for name in _GRPC),
        *((f"https.{name}", mutual) for name in _HTTPS),
        ("https.client", {"enabled": True, **mutual}),
        ("admin", {"user": "admin", "password": admin_password}),
    ]
    lines = ["# Written by Bulkhead at every start, with new keys each time; edits are overwritten."]
    for table, values in sections:
        lines += ["", f"[{table}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def write_security(root: Path) -> TlsFiles:
    """Write ``root/security.toml`` (where ``weed`` started in ``root`` reads it) and its TLS files."""
    tls = write_tls(root / "tls")
    write_private(root / "security.toml", security_toml(tls, admin_password=new_secret()))
    return tls
