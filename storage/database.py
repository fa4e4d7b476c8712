"""The database handle the other layers hold: engine, units of work and administrative queries."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from storage.db import make_engine
from storage.migrate import upgrade
from storage.models import ResourceRow
from storage.repository import PartitionInfo, list_partitions
from storage.uow import UnitOfWork


class Database:
    """One PostgreSQL database holding every partition."""

    def __init__(self, url: str, *, pool_size: int = 5):
        self.url = url
        self.engine: Engine = make_engine(url, pool_size=pool_size)

    def unit_of_work(self, partition: str) -> UnitOfWork:
        """Return a unit of work scoped to ``partition``."""
        return UnitOfWork(self.engine, partition)

    def migrate(self) -> None:
        """Apply every pending migration."""
        upgrade(self.engine)

    def partitions(self) -> list[PartitionInfo]:
        """List every partition (administrative, crosses partitions on purpose)."""
        with Session(self.engine) as session:
            return list_partitions(session)

    def partitions_holding_data(self) -> int:
        """Count the partitions that hold at least one resource version."""
        with Session(self.engine) as session:
            return session.scalar(select(func.count(func.distinct(ResourceRow.partition_id)))) or 0

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
