"""SMART Backend Services clients, registered per partition, and the assertions they have used.

Looking a client up happens before anyone knows its partition (it authenticates the caller), so it uses the
administrative path; ``smart_client`` is readable only there (row-level security).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Boolean, Column, DateTime, MetaData, String, Table, Text, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from storage.database import Database

_metadata = MetaData()
smart_client = Table(
    "smart_client",
    _metadata,
    Column("client_id", String(256), primary_key=True),
    Column("partition", String(64)),
    Column("name", String(256)),
    Column("jwks", Text),
    Column("jwks_url", String(2048)),
    Column("scope", Text),
    Column("enabled", Boolean),
    Column("created_at", DateTime(timezone=True)),
)
smart_assertion = Table(
    "smart_assertion",
    _metadata,
    Column("client_id", String(256), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class SmartClient:
    """A backend-services client: its partition (``*`` for an administrator), keys and allowed scopes."""

    client_id: str
    partition: str
    scope: str
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    name: str | None = None
    enabled: bool = True


def register_client(database: Database, client: SmartClient) -> None:
    """Store or replace a client (administrative)."""
    values = {
        "partition": client.partition,
        "name": client.name,
        "jwks": orjson.dumps(client.jwks).decode() if client.jwks is not None else None,
        "jwks_url": client.jwks_url,
        "scope": client.scope,
        "enabled": client.enabled,
    }
    with database.admin_session() as session:
        session.execute(
            pg_insert(smart_client)
            .values(client_id=client.client_id, **values)
            .on_conflict_do_update(index_elements=["client_id"], set_=values)
        )


def find_client(database: Database, client_id: str) -> SmartClient | None:
    """Return the client registered under ``client_id``, or None."""
    with database.admin_session() as session:
        row = (
            session.execute(select(smart_client).where(smart_client.c.client_id == client_id))
            .mappings()
            .first()
        )
    if row is None:
        return None
    return SmartClient(
        client_id=row["client_id"],
        partition=row["partition"],
        scope=row["scope"],
        jwks=orjson.loads(row["jwks"]) if row["jwks"] else None,
        jwks_url=row["jwks_url"],
        name=row["name"],
        enabled=row["enabled"],
    )


def remember_assertion(database: Database, client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record a client assertion's jti; return False if it was used before (a replay)."""
    with database.engine.begin() as conn:
        conn.execute(delete(smart_assertion).where(smart_assertion.c.expires_at < func.now()))
        inserted = conn.execute(
            pg_insert(smart_assertion)
            .values(client_id=client_id, jti=jti, expires_at=expires_at)
            .on_conflict_do_nothing()
            .returning(smart_assertion.c.jti)
        )
        return inserted.first() is not None
