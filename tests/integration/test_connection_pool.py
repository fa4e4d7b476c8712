"""The connection pool: no ping on a busy pool, a dead idle connection replaced before a request uses it,
and partition ids remembered only once committed."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import event

from harness.services import app_database
from storage import Database
from storage.db import PING_AFTER_IDLE_SECONDS, libpq_url


def _statements(db: Database) -> list[str]:
    seen: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def _seen(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    return seen


def test_a_connection_that_died_while_idle_is_replaced_before_a_request_uses_it(
    database_url: str, owner_database_url: str, partition: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.db.PING_AFTER_IDLE_SECONDS", 0.2)
    db = app_database(database_url)
    try:
        with db.unit_of_work(partition) as uow:
            assert uow.resources.current("Patient", "x") is None
            pid = uow.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        # Given the pooled connection's server process killed while it sat idle
        with psycopg.connect(libpq_url(owner_database_url), autocommit=True) as owner:
            owner.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.4)
        # When the next unit of work runs, Then it gets a live connection, not an error
        with db.unit_of_work(partition) as uow:
            assert uow.resources.current("Patient", "x") is None
            again = uow.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        assert again != pid
    finally:
        db.dispose()


def test_a_busy_pool_sends_no_ping_and_a_known_partition_costs_no_lookup(
    database_url: str, partition: str
) -> None:
    db = app_database(database_url)
    try:
        with db.unit_of_work(partition) as uow:
            uow.resources.partition_id(create=True)
            uow.commit()
        with db.unit_of_work(partition) as uow:
            uow.resources.current("Patient", "x")
        seen = _statements(db)
        # When the partition is read again right away
        with db.unit_of_work(partition) as uow:
            uow.resources.current("Patient", "x")
        # Then the read is the only statement: the partition setting went with the BEGIN, and no ping
        assert len(seen) == 1, seen
        assert "FROM resource" in seen[0]
        assert PING_AFTER_IDLE_SECONDS > 0.5
    finally:
        db.dispose()


_SETTING = "SELECT current_setting('bulkhead.partition', true)"


def test_the_partition_set_with_the_begin_scopes_the_transaction_and_ends_with_it(
    database_url: str, partition: str
) -> None:
    db = app_database(database_url)
    try:
        with db.unit_of_work(partition) as uow:
            assert uow.session.connection().exec_driver_sql(_SETTING).scalar() == partition
            uow.commit()
            # The next transaction of the same unit of work is scoped again
            assert uow.session.connection().exec_driver_sql(_SETTING).scalar() == partition
        # And a connection outside a unit of work carries no partition
        with db.engine.connect() as plain:
            assert plain.exec_driver_sql(_SETTING).scalar() in ("", None)
    finally:
        db.dispose()


def test_a_partition_created_by_a_transaction_that_rolled_back_is_not_remembered(
    database_url: str, partition: str
) -> None:
    db = app_database(database_url)
    try:
        with db.unit_of_work(partition) as uow:
            assert uow.resources.partition_id(create=True) is not None
            uow.rollback()
        assert partition not in db.partition_ids
        with db.unit_of_work(partition) as uow:
            assert uow.resources.partition_id() is None
    finally:
        db.dispose()
