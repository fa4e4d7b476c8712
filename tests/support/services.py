"""Real services for the test suite: the ones the environment names, or ones the suite starts itself."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psycopg

from core.errors import ServiceUnavailable
from core.settings import Settings
from storage.db import libpq_url
from storage.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedS3, S3Endpoint
from storage.objectstore import object_store_from_settings


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
