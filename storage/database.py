"""The database handle the other layers hold: engines, units of work and administrative queries.

Two connections, two roles: ``engine`` connects as the application role, whose transactions see only the
partition they name; ``admin_engine`` connects as the administrative role, the only one that row-level
security lets across partitions. Nothing an application-role session can run (no GUC, no ``SET ROLE``)
reaches the administrative policies; only code that holds this handle and calls ``admin_session`` does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session

from core.settings import Settings
from storage.db import (
    DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
    DEFAULT_STATEMENT_TIMEOUT_SECONDS,
    make_engine,
)
from storage.migrate import upgrade
from storage.models import ResourceRow
from storage.repository import PartitionInfo, list_partitions
from storage.security import DEFAULT_ADMIN_ROLE, role_url, secure_schema
from storage.uow import UnitOfWork


def admin_database_url(settings: Settings) -> str | None:
    """Return the administrative URL: ``database_admin_url``, else the database URL with the admin role."""
    if settings.database_admin_url:
        return settings.database_admin_url
    if not settings.database_url:
        return None
    return role_url(settings.database_url, settings.database_admin_role, settings.database_admin_password)


class Database:
    """One PostgreSQL database holding every partition.

    ``admin_url`` defaults to ``url`` with its user replaced by ``bulkhead_admin`` (and no password); the
    administrative engine connects on first use only. Both carry the statement and idle-in-transaction
    time limits.
    """

    def __init__(
        self,
        url: str,
        *,
        admin_url: str | None = None,
        pool_size: int = 5,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        idle_in_transaction_timeout: float = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
    ):
        self.url = url
        self.admin_url = admin_url or role_url(url, DEFAULT_ADMIN_ROLE)
        self._timeouts = {
            "statement_timeout": statement_timeout,
            "idle_in_transaction_timeout": idle_in_transaction_timeout,
        }
        self.engine: Engine = make_engine(url, pool_size=pool_size, **self._timeouts)
        self._admin_engine: Engine | None = None
        self._admin_lock = threading.Lock()
        #: Partition name -> id, as committed (``ResourceRepository.partition_id`` fills it).
        self.partition_ids: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int = 5) -> Database:
        """Return the database of ``settings`` (``database_url``, its administrative URL, time limits)."""
        if not settings.database_url:
            raise ValueError("BULKHEAD_DATABASE_URL is not set")
        return cls(
            settings.database_url,
            admin_url=admin_database_url(settings),
            pool_size=pool_size,
            statement_timeout=settings.database_statement_timeout_seconds,
            idle_in_transaction_timeout=settings.database_idle_in_transaction_timeout_seconds,
        )

    @property
    def admin_engine(self) -> Engine:
        """Return the engine of the administrative role (built on first use)."""
        with self._admin_lock:
            if self._admin_engine is None:
                self._admin_engine = make_engine(self.admin_url, pool_size=2, **self._timeouts)
            return self._admin_engine

    def unit_of_work(self, partition: str) -> UnitOfWork:
        """Return a unit of work scoped to ``partition``."""
        return UnitOfWork(self.engine, partition, self.partition_ids)

    def migrate(
        self,
        *,
        app_role: str = "bulkhead_app",
        app_password: str | None = None,
        admin_role: str = DEFAULT_ADMIN_ROLE,
        admin_password: str | None = None,
    ) -> None:
        """Apply every pending migration and secure the schema for both roles, in one transaction."""

        def secure(conn: Connection) -> None:
            secure_schema(conn, app_role, app_password, admin_role=admin_role, admin_password=admin_password)

        upgrade(self.engine, then=secure)

    @contextmanager
    def admin_session(self) -> Iterator[Session]:
        """Yield a session of the administrative role, whose transaction sees every partition.

        Only for code paths that have checked administrative rights or serve the system itself (listing
        partitions, the sweeper and the release window, server-wide reindex, the token endpoint's client
        lookup). Commits when the block ends without an error.
        """
        with Session(self.admin_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def partitions(self) -> list[PartitionInfo]:
        """List every partition (administrative, crosses partitions on purpose)."""
        with self.admin_session() as session:
            return list_partitions(session)

    def partitions_holding_data(self) -> int:
        """Count the partitions that hold at least one resource version."""
        with self.admin_session() as session:
            return session.scalar(select(func.count(func.distinct(ResourceRow.partition_id)))) or 0

    def bypasses_row_security(self) -> bool:
        """Return True if this database's role is a superuser or bypasses row-level security."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
            ).scalar()
            return bool(row)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        with self._admin_lock:
            if self._admin_engine is not None:
                self._admin_engine.dispose()
