"""Credentials of the servers ``bulkhead serve`` embeds: made once, kept in ``<data dir>/secrets``.

One file per secret, mode 0600, in a directory of mode 0700 (``cli.embedded.secretfiles``). The S3 keys
live beside the S3 server's data (``s3/identities.json``, also 0600).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cli.embedded import EmbeddedPostgres, EmbeddedRedis
from cli.embedded.secretfiles import secret_file
from core.settings import Settings
from storage.security import role_url

SECRETS_DIR = "secrets"


def serve_secret(data_dir: Path, name: str) -> str:
    """Return the secret ``name`` of the data directory, made (and kept) the first time it is asked for."""
    return secret_file(data_dir / SECRETS_DIR, name)


def role_password(settings_value: str | None, data_dir: Path, role: str) -> str:
    """Return the configured password of database role ``role``, else the one kept for it."""
    return settings_value or serve_secret(data_dir, f"postgres-{role}")


def embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Return the data directory's embedded PostgreSQL, its superuser's password from the secrets."""
    return EmbeddedPostgres(data_dir / "postgres", password=serve_secret(data_dir, "postgres"))


def embedded_redis(data_dir: Path) -> EmbeddedRedis:
    """Return the data directory's embedded Redis, its password from the secrets."""
    return EmbeddedRedis(data_dir / "redis", password=serve_secret(data_dir, "redis"))


def embedded_database_settings(settings: Settings, data_dir: Path, owner_url: str) -> Settings:
    """Return ``settings`` on the embedded server of ``owner_url``: migrations as its superuser, everything
    else as the application role, cross-partition work as the administrative role; each role's password is
    its BULKHEAD_DATABASE_*_PASSWORD or a kept one."""
    role, admin = settings.database_app_role, settings.database_admin_role
    app_password = role_password(settings.database_app_password, data_dir, role)
    admin_password = role_password(settings.database_admin_password, data_dir, admin)
    return replace(
        settings,
        database_url=role_url(owner_url, role, app_password),
        database_admin_url=role_url(owner_url, admin, admin_password),
        migration_database_url=owner_url,
        database_app_password=app_password,
        database_admin_password=admin_password,
    )
