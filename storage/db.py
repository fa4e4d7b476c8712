"""Engines and connection URLs."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine


def sqlalchemy_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver named, whatever form it was given in."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """Return ``url`` in the plain libpq form that psycopg.connect accepts."""
    return sqlalchemy_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine for a PostgreSQL URL."""
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        future=True,
        connect_args={"options": "-c timezone=UTC"},
    )
