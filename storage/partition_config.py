"""Per-partition configuration: limits whose defaults come from settings, overridden per partition.

Overrides live in ``partition_config`` (keyed by partition name, so a partition can be configured before
its first write). A tenant's transaction can read its own row only (row-level security); changing rows is
administrative (``Database.admin_session()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.errors import InvalidRequest
from core.settings import Settings
from storage.database import Database

_metadata = MetaData()
partition_config = Table(
    "partition_config",
    _metadata,
    Column("partition", String(64), primary_key=True),
    Column("max_concurrent_jobs", Integer),
    Column("max_body_bytes", BigInteger),
    Column("max_transaction_entries", Integer),
    Column("rate_per_second", Float),
    Column("rate_burst", Integer),
    Column("updated_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class PartitionLimits:
    """The limits of one partition; in an override, None means 'use the default'."""

    max_concurrent_jobs: int | None = None
    max_body_bytes: int | None = None
    max_transaction_entries: int | None = None
    rate_per_second: float | None = None
    rate_burst: int | None = None

    @classmethod
    def defaults(cls, settings: Settings) -> PartitionLimits:
        """Return the limits every partition has unless overridden."""
        return cls(
            max_concurrent_jobs=settings.export_max_concurrent_per_partition,
            max_body_bytes=settings.max_body_bytes,
            max_transaction_entries=settings.max_transaction_entries,
            rate_per_second=settings.rate_limit_per_second,
            rate_burst=settings.rate_limit_burst,
        )

    def over(self, defaults: PartitionLimits) -> PartitionLimits:
        """Return ``defaults`` with the values set here taking precedence."""
        return replace(defaults, **{k: v for k, v in asdict(self).items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """Return the limits as a dict."""
        return asdict(self)


LIMIT_NAMES = tuple(f.name for f in fields(PartitionLimits))


def check_limits(values: dict[str, Any]) -> PartitionLimits:
    """Return an override from ``values`` (names of PartitionLimits), or raise InvalidRequest."""
    unknown = set(values) - set(LIMIT_NAMES)
    if unknown:
        raise InvalidRequest(f"Unknown partition setting(s): {', '.join(sorted(unknown))}")
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            clean[name] = None
            continue
        kind = float if name == "rate_per_second" else int
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{name} must be a number")
        number = kind(value)
        if number < 0 or (number == 0 and name in {"max_body_bytes", "max_transaction_entries"}):
            raise InvalidRequest(f"{name} must be positive")
        clean[name] = number
    return PartitionLimits(**clean)


def _row_limits(row: Any) -> PartitionLimits:
    return PartitionLimits(**{name: row[name] for name in LIMIT_NAMES})


def read_overrides(database: Database, partition: str) -> PartitionLimits:
    """Return the overrides of ``partition`` (all None when it has none), read in its own transaction."""
    with database.unit_of_work(partition) as uow:
        row = (
            uow.session.execute(select(partition_config).where(partition_config.c.partition == partition))
            .mappings()
            .first()
        )
    return _row_limits(row) if row is not None else PartitionLimits()


def effective_limits(database: Database, settings: Settings, partition: str) -> PartitionLimits:
    """Return the limits in force in ``partition``: its overrides over the settings' defaults."""
    return read_overrides(database, partition).over(PartitionLimits.defaults(settings))


def set_overrides(database: Database, partition: str, limits: PartitionLimits) -> PartitionLimits:
    """Store ``limits`` as the overrides of ``partition`` (administrative); return the stored overrides."""
    values = {k: v for k, v in limits.as_dict().items()}
    with database.admin_session() as session:
        session.execute(
            pg_insert(partition_config)
            .values(partition=partition, updated_at=func.now(), **values)
            .on_conflict_do_update(index_elements=["partition"], set_={**values, "updated_at": func.now()})
        )
    return limits


def delete_overrides(database: Database, partition: str) -> bool:
    """Remove the overrides of ``partition`` (administrative); return whether there were any."""
    with database.admin_session() as session:
        result = session.execute(delete(partition_config).where(partition_config.c.partition == partition))
        return bool(getattr(result, "rowcount", 0))


def list_overrides(database: Database) -> list[tuple[str, PartitionLimits, datetime]]:
    """Return every partition's overrides (administrative)."""
    with database.admin_session() as session:
        rows = session.execute(select(partition_config).order_by(partition_config.c.partition)).mappings()
        return [(r["partition"], _row_limits(r), r["updated_at"]) for r in rows]
