"""Real services for the test suite: the ones the environment names, or ones the suite starts itself."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

from cli.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedS3,
    ManagedProcess,
    S3Endpoint,
    free_port,
)
from core.errors import ServiceUnavailable
from core.settings import Settings
from storage import Database
from storage.db import libpq_url
from storage.objectstore import object_store_from_settings
from storage.security import role_url

APP_ROLE = "bulkhead_app"
#: The application role's password in this suite's databases. Embedded servers accept password logins
#: only; one fixed value, so that test runs sharing a server do not change it under each other.
APP_ROLE_PASSWORD = "bulkhead-test-application-role"
ADMIN_ROLE = "bulkhead_admin"
#: The administrative role's password in this suite's databases (fixed, for the same reason).
ADMIN_ROLE_PASSWORD = "bulkhead-test-administrative-role"


def app_database(app_url: str, **options: Any) -> Database:
    """Return a Database on the application role's URL whose administrative engine logs in with the
    suite's administrative password (embedded servers refuse a login without one)."""
    return Database(app_url, admin_url=role_url(app_url, ADMIN_ROLE, ADMIN_ROLE_PASSWORD), **options)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the URL of a PostgreSQL server: BULKHEAD_TEST_DATABASE_URL's, or an embedded one."""
    url = os.environ.get("BULKHEAD_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="bulkhead-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data")
        try:
            yield server.start()
        finally:
            server.stop()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create a database of its own on the server for this test run; drop it afterwards."""
    name = f"bulkhead_test_{secrets.token_hex(4)}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate_for_tests(owner_url: str) -> str:
    """Migrate the database of ``owner_url`` (as its owner) and return the application role's URL on it."""
    db = Database(owner_url)
    try:
        db.migrate(
            app_role=APP_ROLE,
            app_password=APP_ROLE_PASSWORD,
            admin_role=ADMIN_ROLE,
            admin_password=ADMIN_ROLE_PASSWORD,
        )
    finally:
        db.dispose()
    return role_url(owner_url, APP_ROLE, APP_ROLE_PASSWORD)


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield a Redis URL: BULKHEAD_TEST_REDIS_URL's, or an embedded server's (started here, stopped after)."""
    url = os.environ.get("BULKHEAD_TEST_REDIS_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="bulkhead-redis-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        try:
            yield server.start()
        finally:
            server.stop()


@dataclass(frozen=True)
class S3Settings:
    """The object store of a test run, as the ``s3_*`` fields of Settings name it."""

    s3_endpoint_url: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    s3_region: str = "us-east-1"
    s3_prefix: str = "bulkhead"

    def apply(self, settings: Settings) -> Settings:
        """Return ``settings`` pointing at this object store."""
        return replace(settings, **asdict(self))

    def environ(self) -> dict[str, str]:
        """Return the BULKHEAD_S3_* variables for a process that should use this object store."""
        return {f"BULKHEAD_{name.upper()}": str(value) for name, value in asdict(self).items()}


@contextmanager
def s3_server() -> Iterator[S3Endpoint]:
    """Yield an S3 endpoint: BULKHEAD_TEST_S3_ENDPOINT_URL's (with its keys), or an embedded SeaweedFS."""
    url = os.environ.get("BULKHEAD_TEST_S3_ENDPOINT_URL")
    if url:
        yield S3Endpoint(
            url,
            os.environ.get("BULKHEAD_TEST_S3_ACCESS_KEY", ""),
            os.environ.get("BULKHEAD_TEST_S3_SECRET_KEY", ""),
            os.environ.get("BULKHEAD_TEST_S3_REGION", "us-east-1"),
        )
        return
    with tempfile.TemporaryDirectory(prefix="bulkhead-s3-") as tmp:
        server = EmbeddedS3(Path(tmp))
        try:
            yield server.start()
        finally:
            server.stop()


@contextmanager
def fresh_bucket(endpoint: S3Endpoint) -> Iterator[S3Settings]:
    """Create a bucket of its own on the endpoint for this test run; empty and delete it afterwards."""
    s3 = S3Settings(
        s3_endpoint_url=endpoint.endpoint_url,
        s3_access_key=endpoint.access_key,
        s3_secret_key=endpoint.secret_key,
        s3_bucket=f"bulkhead-test-{secrets.token_hex(6)}",
        s3_region=endpoint.region,
    )
    store = object_store_from_settings(s3.apply(Settings()))
    deadline = time.monotonic() + 15
    while True:
        try:
            store.ensure_bucket()
            break
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield s3
    finally:
        store.delete_bucket()


class ServeProcess:
    """A real ``bulkhead serve`` run as a child process of the test, with its own data directory and port."""

    def __init__(self, data_dir: Path, *, port: int | None = None, environ: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")}
        env.update(environ or {})
        env.update({"BULKHEAD_DATA_DIR": str(data_dir), "BULKHEAD_PORT": str(self.port)})
        script = Path(sys.executable).with_name("bulkhead")
        module = [sys.executable, "-c", "from cli.main import main; main()"]
        argv = [str(script), "serve"] if script.is_file() else [*module, "serve"]
        self.process = ManagedProcess(
            "bulkhead serve", argv, env=env, log_path=self.log_path, stop_timeout=90
        )

    @property
    def base_url(self) -> str:
        """Return the API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Return everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until_answering(self, timeout: float = 30.0) -> float:
        """Wait until ``GET /metadata`` answers 200; return how many seconds that took."""
        started = time.monotonic()
        while True:
            if not self.process.running():
                raise AssertionError(f"bulkhead serve exited early:\n{self.log()[-4000:]}")
            try:
                if requests.get(f"{self.base_url}/metadata", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no answer on /metadata within {timeout:.0f} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def wait_until_started(self, timeout: float = 30.0) -> None:
        """Wait until the server printed its start-up summary (every process is started)."""
        deadline = time.monotonic() + timeout
        while "Press Ctrl-C to stop." not in self.log():
            if not self.process.running() or time.monotonic() > deadline:
                raise AssertionError(f"no start-up summary within {timeout:.0f} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def runtime(self) -> dict[str, str]:
        """Return what the server recorded in its runtime file (URLs and keys of its services)."""
        return {str(k): str(v) for k, v in json.loads((self.data_dir / "serve.json").read_text()).items()}

    def processes(self) -> list[psutil.Process]:
        """Return every process the server runs: its descendants and the embedded PostgreSQL's."""
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            for p in psutil.Process(self.process.pid).children(recursive=True):
                found[p.pid] = p
        marker = str(self.data_dir)
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(marker in part for part in (p.info["cmdline"] or [])) and p.pid != self.process.pid:
                    found[p.pid] = p
                    for child in p.children(recursive=True):
                        found[child.pid] = child
        return list(found.values())

    def leftovers(self) -> list[psutil.Process]:
        """Return live processes other than the server that belong to its data directory (by command line
        or by the BULKHEAD_DATA_DIR every child inherits)."""
        marker = str(self.data_dir)
        found = []
        for p in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error):
                if p.pid == self.process.pid or p.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if any(marker in part for part in (p.info["cmdline"] or [])) or (
                    p.environ().get("BULKHEAD_DATA_DIR") == marker
                ):
                    found.append(p)
        return found

    def stop(self) -> int | None:
        """Send SIGTERM and wait for the server to exit; return its exit code."""
        return self.process.stop()


@contextmanager
def serve_data_dir() -> Iterator[Path]:
    """Yield a not-yet-existing data directory for ``bulkhead serve`` under the system temporary directory.

    Not under pytest's own temporary root: pytest keeps that root at mode 0700, and the embedded PostgreSQL
    runs as another user when the suite runs as root.
    """
    with tempfile.TemporaryDirectory(prefix="bulkhead-serve-") as tmp:
        yield Path(tmp) / "data"


@contextmanager
def serve_process(
    data_dir: Path, *, environ: dict[str, str] | None = None, timeout: float = 30.0
) -> Iterator[ServeProcess]:
    """Run ``bulkhead serve`` until the block ends; it answers ``/metadata`` when the block starts."""
    serve = ServeProcess(data_dir, environ=environ)
    try:
        serve.wait_until_answering(timeout)
        serve.wait_until_started(timeout)
        yield serve
    finally:
        serve.stop()
