"""What another user of the machine tries on a local port: find every port a process tree listens on, then
knock with nothing (plain HTTP, a TLS handshake without a certificate, the Redis protocol, a login)."""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import requests


def listening_ports(pid: int) -> set[int]:
    """Return every TCP port that process ``pid`` or one of its descendants listens on."""
    root = psutil.Process(pid)
    ports: set[int] = set()
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            ports |= {
                c.laddr.port for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
            }
    return ports


def postmaster_pid(data_dir: Path) -> int:
    """Return the pid of the PostgreSQL server running on ``data_dir`` (its ``postmaster.pid``)."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class HttpAnswer:
    """What a plain HTTP GET got: a status and body, or no answer (``status`` None: refused or dropped)."""

    status: int | None
    body: bytes

    def refused(self) -> bool:
        """Tell whether the request was turned away (no connection, or 400 / 401 / 403)."""
        return self.status is None or self.status in {400, 401, 403}


def http_get(port: int, path: str) -> HttpAnswer:
    """GET ``http://127.0.0.1:<port><path>`` with no credentials at all."""
    try:
        answer = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5, allow_redirects=False)
    except requests.ConnectionError:
        return HttpAnswer(None, b"")
    return HttpAnswer(answer.status_code, answer.content)


def tls_exchange(port: int, client_cert: tuple[Path, Path] | None = None) -> Exception | None:
    """Open TLS to ``port`` (presenting ``client_cert`` = (certificate, key) if given, trusting any server),
    send a request and read; return the error that ended it, or None if the server answered.

    Reading matters: with TLS 1.3 the server judges the client's certificate after the client has finished
    its handshake, and its refusal arrives as an alert on the first read."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            tls.recv(64)
    except (OSError, ssl.SSLError) as err:
        return err
    return None


def redis_exchange(port: int, *commands: bytes) -> list[bytes]:
    """Send each inline command to the Redis protocol on ``port``; return the first line of each answer."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, s.makefile("rb") as replies:
        for command in commands:
            s.sendall(command + b"\r\n")
            answers.append(replies.readline().rstrip(b"\r\n"))
    return answers


def postgres_login(**params: str | int) -> Exception | None:
    """Log in to PostgreSQL with ``params`` (and no password file); return the refusal, if there is one."""
    try:
        with psycopg.connect(connect_timeout=5, passfile="/nonexistent", **params) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as err:
        return err
    return None
