"""SQLAlchemy 2 models of the tenant tables. Search-index tables live in ``storage/search``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every Bulkhead table."""


class PartitionRow(Base):
    """A data partition: the name a tenant uses, mapped to the small integer its rows carry."""

    __tablename__ = "partition"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ResourceRow(Base):
    """One version of one resource. The current version has ``is_history`` false."""

    __tablename__ = "resource"

    surrogate_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partition_id: Mapped[int] = mapped_column(Integer, ForeignKey("partition.id"))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    is_history: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ux_resource_version", "partition_id", "resource_type", "resource_id", "version", unique=True),
        Index(
            "ux_resource_current",
            "partition_id",
            "resource_type",
            "resource_id",
            unique=True,
            postgresql_where=text("NOT is_history"),
        ),
        Index(
            "ix_resource_live",
            "partition_id",
            "resource_type",
            "surrogate_id",
            postgresql_where=text("NOT is_history AND NOT is_deleted"),
        ),
        Index("ix_resource_updated", "partition_id", "last_updated"),
    )
