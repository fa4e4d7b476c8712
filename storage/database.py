"""The database handle the other layers hold: engine, units of work and administrative queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from storage.db import (
    DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
    DEFAULT_STATEMENT_TIMEOUT_SECONDS,
    make_engine,
)
from storage.migrate import upgrade
from storage.models import ResourceRow
from storage.repository import PartitionInfo, list_partitions
from storage.security import secure_schema
from storage.uow import UnitOfWork


class Database:
    """One PostgreSQL database holding every partition."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        idle_in_transaction_timeout: float = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
    ):
        self.url = url
        self.engine: Engine = make_engine(
            url,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
        )

    def unit_of_work(self, partition: str) -> UnitOfWork:
        """Return a unit of work scoped to ``partition``."""
        return UnitOfWork(self.engine, partition)

    def migrate(self, *, app_role: str = "bulkhead_app", app_password: str | None = None) -> None:
        """Apply every pending migration, then force row-level security for the application role."""
        upgrade(self.engine)
        with self.engine.begin() as conn:
            secure_schema(conn, app_role, app_password)

    @contextmanager
    def admin_session(self) -> Iterator[Session]:
        """Yield a session whose transaction may cross partitions (row-level security's admin flag).

        Only for code paths that have checked administrative rights or serve the system itself (listing
        partitions, the sweeper, server-wide reindex). Commits when the block ends without an error.
        """
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.execute(text("SELECT set_config('bulkhead.admin', 'on', true)"))
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
