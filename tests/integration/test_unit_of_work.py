"""The unit of work turns a lost race with another transaction into 409, never into a 500."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from core.errors import BulkheadError, Conflict
from storage import Database
from tests.support.fhir import base, put


def _lock_in_order(
    database: Database, partition: str, first: str, second: str, barrier: threading.Barrier
) -> None:
    with database.unit_of_work(partition) as uow:
        lock = "SELECT 1 FROM resource WHERE resource_type = 'Patient' AND resource_id = :rid FOR UPDATE"
        uow.session.execute(text(lock), {"rid": first})
        barrier.wait(timeout=10)
        uow.session.execute(text(lock), {"rid": second})
        uow.commit()


def test_two_transactions_that_deadlock_end_in_one_success_and_one_conflict(
    client, database: Database, partition: str
) -> None:
    # Given two resources in a partition
    for rid in ("a", "b"):
        assert (
            put(
                client, f"{base(partition)}/Patient/{rid}", {"resourceType": "Patient", "id": rid}
            ).status_code
            == 201
        )
    barrier = threading.Barrier(2)
    outcomes: list[BaseException | None] = []

    def run(first: str, second: str) -> None:
        try:
            _lock_in_order(database, partition, first, second, barrier)
            outcomes.append(None)
        except BaseException as exc:
            outcomes.append(exc)

    # When two transactions lock them in opposite orders (PostgreSQL detects the deadlock and aborts one)
    threads = [threading.Thread(target=run, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # Then one commits and the other raises Conflict (409), which the API maps to an OperationOutcome
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "NoneType"]
    conflict = next(o for o in outcomes if o is not None)
    assert isinstance(conflict, Conflict) and isinstance(conflict, BulkheadError)
    assert conflict.status == 409
    # And both resources are still there, unchanged
    for rid in ("a", "b"):
        assert client.get(f"{base(partition)}/Patient/{rid}").status_code == 200


def test_a_database_error_that_is_not_a_lost_race_is_not_disguised_as_a_conflict(
    database: Database, partition: str
) -> None:
    # Given a unit of work
    # When a statement fails for a reason a retry would not fix
    with pytest.raises(DataError) as raised, database.unit_of_work(partition) as uow:
        uow.session.execute(text("SELECT 1/0"))
    # Then the error is not reported as a conflict
    assert not isinstance(raised.value, Conflict)
