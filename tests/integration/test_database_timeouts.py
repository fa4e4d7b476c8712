"""Server-side time limits on the application's connections, and the unit of work's transaction bounds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from api.app import create_app
from core.errors import ServiceUnavailable
from core.settings import Settings
from storage import Database
from storage.db import allow_long_statements, libpq_url
from tests.support.fhir import base, put


def _show(db: Database, name: str) -> str:
    with db.engine.connect() as conn:
        return str(conn.execute(text(f"SHOW {name}")).scalar())


@pytest.fixture
def strict(database_url: str) -> Iterator[Database]:
    """Yield a Database whose connections allow 0.5 s statements and 0.5 s idle in a transaction."""
    db = Database(database_url, statement_timeout=0.5, idle_in_transaction_timeout=0.5)
    yield db
    db.dispose()


def test_every_application_connection_carries_a_statement_and_an_idle_in_transaction_limit(
    database: Database, database_url: str
) -> None:
    # Given the application's Database with its defaults / Then both limits are set on its connections
    assert _show(database, "statement_timeout") == "5min"
    assert _show(database, "idle_in_transaction_session_timeout") == "1min"
    # And an app built from settings carries the configured ones
    settings = Settings(
        database_url=database_url,
        database_statement_timeout_seconds=7,
        database_idle_in_transaction_timeout_seconds=3,
    )
    app = create_app(settings)
    db = app.extensions["bulkhead.db"]
    try:
        assert _show(db, "statement_timeout") == "7s"
        assert _show(db, "idle_in_transaction_session_timeout") == "3s"
    finally:
        db.dispose()


def test_a_bulk_transaction_widens_its_limits_for_itself_only(strict: Database, partition: str) -> None:
    with strict.unit_of_work(partition) as uow:
        allow_long_statements(uow.session)
        uow.session.execute(text("SELECT pg_sleep(0.8)"))
        assert uow.session.execute(text("SHOW statement_timeout")).scalar() == "6h"
        uow.commit()
        assert uow.session.execute(text("SHOW statement_timeout")).scalar() == "500ms"


def test_a_statement_past_the_limit_is_cancelled_as_service_unavailable(
    strict: Database, partition: str
) -> None:
    with pytest.raises(ServiceUnavailable), strict.unit_of_work(partition) as uow:
        uow.session.execute(text("SELECT pg_sleep(3)"))


def test_a_transaction_left_idle_past_the_limit_is_ended_as_service_unavailable(
    strict: Database, partition: str
) -> None:
    with pytest.raises(ServiceUnavailable), strict.unit_of_work(partition) as uow:
        uow.session.execute(text("SELECT 1"))
        time.sleep(1.5)
        uow.session.execute(text("SELECT 1"))


def test_a_unit_of_work_holds_no_transaction_before_its_first_statement_or_after_a_commit(
    database: Database, owner_database_url: str, partition: str
) -> None:
    with psycopg.connect(libpq_url(owner_database_url), autocommit=True) as watcher:

        def state(pid: int) -> str:
            row = watcher.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            assert row is not None
            return str(row[0])

        with database.unit_of_work(partition) as uow:
            # Given a unit of work whose first statement ran
            pid = int(uow.session.execute(text("SELECT pg_backend_pid()")).scalar_one())
            assert state(pid) == "idle in transaction"
            # And the partition is set for it
            assert (
                uow.session.execute(text("SELECT current_setting('bulkhead.partition')")).scalar()
                == partition
            )
            # When it commits / Then the connection holds no transaction until the next statement
            uow.commit()
            assert state(pid) == "idle"
            assert (
                uow.session.execute(text("SELECT current_setting('bulkhead.partition')")).scalar()
                == partition
            )


def test_a_write_blocked_past_the_statement_limit_answers_503_and_stores_nothing(
    settings: Settings, database_url: str, owner_database_url: str, partition: str
) -> None:
    # Given an API whose statements may run 0.5 s, and a Patient another session holds locked
    app = create_app(replace(settings, database_statement_timeout_seconds=0.5))
    client: FlaskClient = app.test_client()
    body = {"resourceType": "Patient", "id": "locked", "gender": "male"}
    assert put(client, f"{base(partition)}/Patient/locked", body).status_code == 201
    with psycopg.connect(libpq_url(owner_database_url)) as holder:
        holder.execute("SELECT 1 FROM resource WHERE resource_id = 'locked' FOR UPDATE")
        # When the Patient is updated
        response = put(client, f"{base(partition)}/Patient/locked", {**body, "gender": "female"})
        holder.rollback()
    # Then the answer is 503 with an OperationOutcome, and the Patient is unchanged
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json(force=True)["resourceType"] == "OperationOutcome"
    read = client.get(f"{base(partition)}/Patient/locked").get_json(force=True)
    assert read["gender"] == "male" and read["meta"]["versionId"] == "1"
    app.extensions["bulkhead.db"].dispose()
