"""Real services for the test suite: the ones the environment names, or ones the suite starts itself."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from storage.db import libpq_url
from storage.embedded import EmbeddedPostgres


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
