"""HTTP(S) for import inputs: a ``requests`` session that connects only where the input policy allows.

The check is made on the address actually connected to: each connection resolves the host itself, connects
only to public addresses (``core.importpolicy.address_is_public``) and checks the peer once connected, so a
name that resolves to a public address for the kick-off check and to 127.0.0.1 for the fetch (DNS
rebinding) is still refused. Every request, redirects included, goes through ``send``: a URL the operator
allowed is fetched without the address check, any other on a guarded connection, and the server's own
services are refused by host and port. Proxies from the environment are not used (the proxy would be the
address connected to), and at most five redirects are followed.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from core.importpolicy import InputPolicy, address_is_public

MAX_REDIRECTS = 5
_QUERY = re.compile(r"\?[^\s\"']*")


class _RedactQueries(logging.Filter):
    """urllib3 logs each request line at DEBUG, query string included: a pre-signed URL's signature would
    reach the logs. This filter keeps the line and drops the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_QUERY.sub("?redacted", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = _QUERY.sub("?redacted", record.msg)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactQueries())


class AddressRefused(Exception):
    """The input's host resolved only to addresses the policy refuses (deliberately not an OSError, so
    urllib3 neither retries it nor wraps it)."""


def _connect(host: str, port: int, timeout: Any, source_address: Any, options: Any) -> socket.socket:
    refused = False
    last: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        if not address_is_public(str(address[0])):
            refused = True
            continue
        sock = socket.socket(family, kind, proto)
        try:
            for option in options or ():
                sock.setsockopt(*option)
            if timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            peer = sock.getpeername()[0]
            if not address_is_public(str(peer)):
                raise AddressRefused(host)
            return sock
        except AddressRefused:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
    if refused:
        raise AddressRefused(host)
    raise last or OSError(f"{host} has no address")


class _Guarded:
    """Connect only to public addresses (``_connect``); a refused one raises ``AddressRefused``."""

    def _new_conn(self: Any) -> socket.socket:
        try:
            return _connect(self._dns_host, self.port, self.timeout, self.source_address, self.socket_options)
        except AddressRefused:
            raise
        except OSError as exc:
            raise NewConnectionError(self, "connection failed") from exc


class _GuardedHTTPConnection(_Guarded, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class _PolicyAdapter(HTTPAdapter):
    """Sends each request on the operator-allowed or the guarded transport, refusing the server's own."""

    def __init__(self, policy: InputPolicy):
        super().__init__(max_retries=0)
        self.policy = policy
        self.guarded = _GuardedAdapter(max_retries=0)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        if self.policy.operator_allows(url):
            return super().send(request, *args, **kwargs)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port if parts.port is not None else {"http": 80, "https": 443}.get(scheme)
        if scheme not in ("http", "https") or self.policy.is_own_service(parts.hostname or "", port):
            raise AddressRefused(parts.hostname or "")
        return self.guarded.send(request, *args, **kwargs)

    def close(self) -> None:
        self.guarded.close()
        super().close()


def policy_session(policy: InputPolicy) -> requests.Session:
    """Return a session whose every connection (redirects too) obeys ``policy``."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    adapter = _PolicyAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


__all__ = ["MAX_REDIRECTS", "AddressRefused", "policy_session"]
