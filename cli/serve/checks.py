"""Checks and waits of ``bulkhead serve`` while it starts its processes."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from cli.embedded import ManagedProcess
from core.errors import ServiceUnavailable
from core.settings import Settings
from core.stopping import StopFlag
from storage.objectstore import object_store_from_settings


class ServeError(RuntimeError):
    """``bulkhead serve`` cannot start or keep running."""


class StopRequested(Exception):
    """A stop was asked for (a signal) while ``bulkhead serve`` was starting."""


def gunicorn_extras() -> list[str]:
    """Return options for the installed gunicorn: no control socket (its default path is per user, and
    two servers on one machine would fight over it)."""
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


def wait_for_metadata(
    process: ManagedProcess, settings: Settings, *, timeout: float, stopping: StopFlag
) -> None:
    """Wait until ``GET /metadata`` answers (any status: the application is loaded and serving)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    url = (
        f"http://[{host}]:{settings.port}/metadata"
        if ":" in host
        else f"http://{host}:{settings.port}/metadata"
    )
    deadline = time.monotonic() + timeout
    while True:
        if not process.running():
            raise RuntimeError(f"the API server exited with code {process.popen.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f} s") from None
            if stopping.wait(0.1):
                raise StopRequested from None


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise ServeError(
                f"cannot listen on {host}:{port} ({err.strerror}); choose another port with --port "
                "or BULKHEAD_PORT"
            ) from None


def ensure_bucket(settings: Settings) -> None:
    store = object_store_from_settings(settings)
    deadline = time.monotonic() + 20
    while True:
        try:
            store.ensure_bucket()
            return
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def redact(url: str) -> str:
    """Return ``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
