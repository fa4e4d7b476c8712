"""Fixtures shared by every test: real PostgreSQL, an application, a random partition per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from core.settings import Settings
from harness.services import (
    ADMIN_ROLE_PASSWORD,
    APP_ROLE,
    APP_ROLE_PASSWORD,
    S3Settings,
    app_database,
    fresh_bucket,
    fresh_database,
    migrate_for_tests,
    postgres_server,
    redis_server,
    s3_server,
)
from harness.tokens import AuthKeys
from storage import Database
from storage.audit import flush_all
from storage.objectstore import S3ObjectStore, object_store_from_settings
from storage.security import role_url
from tests.support.http_files import FileServer, file_server

#: The key that seals import credentials in the test runs' job tables.
IMPORT_SECRET_KEY = secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def owner_database_url() -> Iterator[str]:
    """Yield the URL of a migrated database of this test run's own, as the role that owns its tables."""
    with postgres_server() as server, fresh_database(server) as url:
        migrate_for_tests(url)
        yield url


@pytest.fixture(scope="session")
def database_url(owner_database_url: str) -> str:
    """Return the URL the application and workers use: the restricted role, under row-level security."""
    return role_url(owner_database_url, APP_ROLE, APP_ROLE_PASSWORD)


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    """Yield the Database handle of the test run."""
    db = app_database(database_url)
    yield db
    flush_all()  # the audit events still queued, before the database is dropped
    db.dispose()


@pytest.fixture(scope="session")
def files() -> Iterator[FileServer]:
    """Serve test files over HTTP on 127.0.0.1 (the one loopback server test imports may read)."""
    with file_server() as server:
        yield server


@pytest.fixture(scope="session")
def settings(database_url: str, files: FileServer) -> Settings:
    """Return settings pointing at the test database; imports may read the test file server, which the
    input policy would refuse (a loopback address) but for the explicit allow-list entry."""
    return Settings(
        database_url=database_url,
        public_base_url="http://bulkhead.test",
        database_admin_password=ADMIN_ROLE_PASSWORD,
        import_allowed_urls=files.base_url + "/",
        import_secret_key=IMPORT_SECRET_KEY,
    )


@pytest.fixture(scope="session")
def app(settings: Settings, database: Database) -> Flask:
    """Return the application under test."""
    return create_app(settings, database=database)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client of the application."""
    return app.test_client()


@pytest.fixture
def partition() -> str:
    """Return a fresh random partition name for this test."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture
def other_partition() -> str:
    """Return a second fresh random partition name (the attacker's or the neighbour's)."""
    return f"o-{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield the URL of a Redis server: BULKHEAD_TEST_REDIS_URL's, or an embedded one for this run."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3_settings() -> Iterator[S3Settings]:
    """Yield the object store of this run: a bucket of its own on BULKHEAD_TEST_S3_ENDPOINT_URL or on a
    SeaweedFS the suite starts; the bucket is emptied and deleted at the end."""
    with s3_server() as endpoint, fresh_bucket(endpoint) as s3:
        yield s3


@pytest.fixture(scope="session")
def object_store(s3_settings: S3Settings) -> S3ObjectStore:
    """Return the object store of this run."""
    return object_store_from_settings(s3_settings.apply(Settings()))


@pytest.fixture(scope="session")
def auth_keys(tmp_path_factory: pytest.TempPathFactory) -> AuthKeys:
    """Return this run's token keys: RSA and EC keys in a JWKS file, an HS256 secret, a signing key."""
    return AuthKeys.create(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="session")
def secure_settings(settings: Settings, auth_keys: AuthKeys) -> Settings:
    """Return the test settings with authentication on (tokens from ``auth_keys``)."""
    return auth_keys.settings(settings)


@pytest.fixture(scope="session")
def secure_app(secure_settings: Settings, database: Database) -> Flask:
    """Return an application that requires bearer tokens (the default ``app`` has authentication off)."""
    return create_app(secure_settings, database=database)


@pytest.fixture
def secure_client(secure_app: Flask) -> FlaskClient:
    """Return a test client of the application with authentication on."""
    return secure_app.test_client()
