"""Which ``$import`` inputs this server may read: the input policy.

An import fetches what a tenant names, with the server's own network position and S3 credentials, so the
tenant must not be able to name what only the server can reach:

- ``http(s)`` inputs: only globally routable addresses (no loopback, private, link-local, shared, unspecified,
  multicast or reserved address, IPv4-mapped or not), and none of the server's own services (its database,
  Redis, broker, S3 endpoints, its own base URL), unless the operator allowed the URL
  (``BULKHEAD_IMPORT_ALLOWED_URLS``: URL prefixes such as ``https://files.example.org/drop/`` or hosts such as
  ``files.example.org`` and ``127.0.0.1:8123``). The address check is made on every address actually
  connected to, for every redirect too (``storage/importfetch.py``); this module decides, it never connects.
- ``s3://`` inputs: buckets the operator allowed (``BULKHEAD_IMPORT_ALLOWED_BUCKETS``), and in Bulkhead's own
  bucket only the partition's own upload prefix ``{prefix}/{partition}/uploads/`` (where ``bulkhead import``
  puts local files): never another partition's keys, never any export's output.

Every refusal and every unreadable input reads the same, ``input N could not be read: <reason>``, with one of
a few fixed reasons, so a refusal tells nothing about what is behind the URL.

URLs are shown (status, results, error files, logs) with credentials and query values redacted
(``display_url``); ``core/importsecrets.py`` seals the real ones for the job table.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from core.errors import InputUnreadable
from core.settings import Settings

NOT_ALLOWED = "not allowed"
NOT_FOUND = "not found"
UNREACHABLE = "unreachable"
CHANGED = "changed since the import started"
NOT_NDJSON = "not an NDJSON file"
REDACTED = "redacted"

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "redis": 6379}
UPLOADS = "uploads"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def unreadable(index: int, reason: str) -> InputUnreadable:
    """Return the one error every refused or unreadable input is reported with."""
    return InputUnreadable(f"input {index} could not be read: {reason}", reason=reason)


def address_is_public(address: str | IPAddress) -> bool:
    """Return True when ``address`` is a globally routable unicast address (IPv4-mapped ones unwrapped)."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            ip = mapped
    return bool(ip.is_global) and not ip.is_multicast and not ip.is_reserved


def _host_port(host: str | None, port: int | None, scheme: str) -> tuple[str, int | None]:
    return (host or "").lower().rstrip("."), port if port is not None else _DEFAULT_PORTS.get(scheme)


def _endpoint(url: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(url)
        return _host_port(parts.hostname, parts.port, parts.scheme.lower())
    except ValueError:
        return None


@dataclass(frozen=True)
class _Allowed:
    """One operator allow-list entry: a URL prefix (scheme, host, port, path) or a host (optional port)."""

    scheme: str | None
    host: str
    port: int | None
    path: str

    @classmethod
    def parse(cls, entry: str) -> _Allowed:
        if "://" in entry:
            parts = urlsplit(entry)
            scheme = parts.scheme.lower()
            host, port = _host_port(parts.hostname, parts.port, scheme)
            return cls(scheme, host, port, parts.path or "/")
        parts = urlsplit("//" + entry)
        return cls(None, (parts.hostname or "").lower().rstrip("."), parts.port, "/")

    def matches(self, scheme: str, host: str, port: int | None, path: str) -> bool:
        if not self.host or host != self.host:
            return False
        if self.scheme is not None:
            if scheme != self.scheme or port != self.port:
                return False
        elif self.port is not None and port != self.port:
            return False
        prefix = self.path
        if prefix.endswith("/"):
            return (path or "/").startswith(prefix)
        return path == prefix or path.startswith(prefix + "/")


def _entries(value: str) -> tuple[str, ...]:
    return tuple(e for e in re.split(r"[\s,]+", value or "") if e)


@dataclass(frozen=True)
class InputPolicy:
    """The operator's rules for import inputs, with the server's own services it must never fetch."""

    allowed_urls: tuple[_Allowed, ...] = ()
    allowed_buckets: frozenset[str] = frozenset()
    own_bucket: str = "bulkhead"
    own_prefix: str = "bulkhead"
    own_services: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        allowed_urls: str = "",
        allowed_buckets: str = "",
        own_bucket: str,
        own_prefix: str,
        own_service_urls: Iterable[str | None] = (),
    ) -> InputPolicy:
        """Build a policy from the operator's settings and the URLs of the server's own services."""
        services = {e for e in (_endpoint(u) for u in own_service_urls if u) if e is not None and e[0]}
        return cls(
            allowed_urls=tuple(_Allowed.parse(e) for e in _entries(allowed_urls)),
            allowed_buckets=frozenset(_entries(allowed_buckets)),
            own_bucket=own_bucket,
            own_prefix=own_prefix.strip("/"),
            own_services=frozenset(services),
        )

    def operator_allows(self, url: str) -> bool:
        """Return True when the operator allowed this http(s) URL (then no address check applies)."""
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            host, port = _host_port(parts.hostname, parts.port, scheme)
        except ValueError:
            return False
        return any(a.matches(scheme, host, port, parts.path) for a in self.allowed_urls)

    def is_own_service(self, host: str, port: int | None) -> bool:
        """Return True when ``host:port`` is one of the server's own services."""
        return (host.lower().rstrip("."), port) in self.own_services

    def check_http(self, index: int, url: str) -> None:
        """Refuse an http(s) URL that names a literal non-public address or one of the server's services.

        Host names are checked again on every connection (their addresses can change); this check is the
        one a request can fail at kick-off.
        """
        if self.operator_allows(url):
            return
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            host, port = _host_port(parts.hostname, parts.port, scheme)
        except ValueError:
            raise unreadable(index, NOT_ALLOWED) from None
        if scheme not in ("http", "https") or not host or self.is_own_service(host, port):
            raise unreadable(index, NOT_ALLOWED)
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            if host == "localhost" or host.endswith(".localhost") or "." not in host:
                raise unreadable(index, NOT_ALLOWED) from None
            return
        if not address_is_public(literal):
            raise unreadable(index, NOT_ALLOWED)

    def upload_prefix(self, partition: str) -> str:
        """Return the only prefix of Bulkhead's own bucket an import into ``partition`` may read."""
        head = f"{self.own_prefix}/" if self.own_prefix else ""
        return f"{head}{partition}/{UPLOADS}/"

    def check_s3(self, index: int, bucket: str, key: str, partition: str) -> None:
        """Refuse an ``s3://`` input outside the allowed buckets and the partition's own upload prefix."""
        if not _BUCKET.fullmatch(bucket) or ".." in key.split("/"):
            raise unreadable(index, NOT_ALLOWED)
        if bucket == self.own_bucket:
            if not key.startswith(self.upload_prefix(partition)):
                raise unreadable(index, NOT_ALLOWED)
            return
        if bucket not in self.allowed_buckets:
            raise unreadable(index, NOT_ALLOWED)


def policy_of(settings: Settings) -> InputPolicy:
    """Return the input policy of a server with ``settings``.

    The server's own services are its database, Redis, broker, its public base URL and its own listening
    address. The S3 endpoint is not among them: a fetch over HTTP carries none of the server's S3
    credentials, so it reaches only what is public there (a pre-signed URL's object, for one); where the
    endpoint is a local or private address, the address check refuses it anyway.
    """
    return InputPolicy.of(
        allowed_urls=settings.import_allowed_urls,
        allowed_buckets=settings.import_allowed_buckets,
        own_bucket=settings.s3_bucket,
        own_prefix=settings.s3_prefix,
        own_service_urls=(
            settings.database_url,
            settings.database_admin_url,
            settings.migration_database_url,
            settings.redis_url,
            settings.broker_url,
            settings.public_base_url,
            f"http://{settings.host}:{settings.port}",
        ),
    )


def has_secret(url: str) -> bool:
    """Return True when ``url`` carries credentials or a query string (a pre-signed URL's signature)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    return bool(parts.query or parts.username or parts.password or parts.fragment)


def display_url(url: str) -> str:
    """Return ``url`` as it may be shown or logged: user information dropped, query values redacted."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    if parts.username or parts.password:
        netloc = f"{REDACTED}@{netloc}"
    query = ""
    if parts.query:
        names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
        query = "?" + (urlencode([(n, REDACTED) for n in names]) if names else REDACTED)
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


__all__ = [
    "CHANGED",
    "NOT_ALLOWED",
    "NOT_FOUND",
    "NOT_NDJSON",
    "UNREACHABLE",
    "InputPolicy",
    "address_is_public",
    "display_url",
    "has_secret",
    "policy_of",
    "unreadable",
]
