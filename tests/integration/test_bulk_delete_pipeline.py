"""Bulk delete's planner, processor and finish on real PostgreSQL and S3 (run inline)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from core.fhirdates import format_instant
from core.settings import Settings
from harness.services import S3Settings
from orchestrator.bulk_edit import DELETE, finish_bulk_edit, plan_bulk_edit
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base, put
from tests.support.run_inline import run_inline
from workers.bulk_edit import process_bulk_edit


@pytest.fixture
def small_chunks(settings: Settings, s3_settings: S3Settings) -> Settings:
    """Return settings with tiny ranges and batches, so that every test crosses range and batch edges."""
    from dataclasses import replace

    return replace(s3_settings.apply(settings), bulk_edit_chunk_rows=7, bulk_edit_batch_size=3)


def seed(client: FlaskClient, partition: str, n: int, rtype: str = "Patient", versions: int = 1) -> None:
    """Store ``n`` resources with ids x0.., each with ``versions`` versions."""
    for i in range(n):
        for v in range(versions):
            body: dict[str, Any] = {"resourceType": rtype, "id": f"x{i}"}
            if rtype == "Patient":
                body["birthDate"] = f"19{50 + v}-01-01"
            else:
                body.update(status="final", code={"text": f"v{v}"})
            response = put(client, f"{base(partition)}/{rtype}/x{i}", body)
            assert response.status_code in (200, 201), response.get_json()


def rows(database: Database, partition: str) -> list[tuple[str, str, int, bool, bool]]:
    """Return (type, id, version, is_history, is_deleted) of every stored version."""
    with database.unit_of_work(partition) as uow:
        found = uow.session.execute(
            text(
                "SELECT resource_type, resource_id, version, is_history, is_deleted FROM resource"
                " ORDER BY resource_type, resource_id, version"
            )
        ).all()
    return [tuple(r) for r in found]  # type: ignore[misc]


def delete_job(
    settings: Settings, database: Database, store: S3ObjectStore, partition: str, **definition: Any
) -> dict[str, Any]:
    """Run one bulk delete inline."""
    d = {"op": DELETE, "query": [], "transaction_time": format_instant(datetime.now(UTC)), **definition}
    return run_inline(
        settings, database, store, partition, d, plan_bulk_edit, process_bulk_edit, finish_bulk_edit
    )


def test_a_soft_bulk_delete_of_one_type_deletes_every_match_of_this_partition_only(
    client: FlaskClient,
    small_chunks: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
):
    # Given 20 patients and 4 observations here, and the same patients in another partition
    seed(client, partition, 20)
    seed(client, partition, 4, "Observation")
    seed(client, other_partition, 20)
    before_other = rows(database, other_partition)
    # When the patients of this partition are bulk deleted
    result = delete_job(small_chunks, database, object_store, partition, types=["Patient"])
    # Then each got a deletion version, the observations are untouched, the other partition too
    assert result["output"] == [{"type": "Patient", "count": 20}] and result["mode"] == "soft"
    patients = [r for r in rows(database, partition) if r[0] == "Patient"]
    assert len(patients) == 40
    assert {(r[2], r[3], r[4]) for r in patients} == {(1, True, False), (2, False, True)}
    assert all(not r[3] and not r[4] for r in rows(database, partition) if r[0] == "Observation")
    assert rows(database, other_partition) == before_other


def test_a_hard_bulk_delete_removes_every_version_and_purge_history_keeps_the_current(
    client: FlaskClient,
    small_chunks: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
):
    # Given patients with three versions in two partitions
    seed(client, partition, 8, versions=3)
    seed(client, other_partition, 8, versions=3)
    # When the history is purged in one and everything hard deleted in the other
    purged = delete_job(
        small_chunks, database, object_store, partition, types=["Patient"], purge_history=True
    )
    hard = delete_job(small_chunks, database, object_store, other_partition, types=["Patient"], hard=True)
    # Then one keeps only each current version and the other keeps nothing
    assert purged["output"] == [{"type": "Patient", "count": 8}] and purged["versionsPurged"] == 16
    assert {(r[2], r[3]) for r in rows(database, partition)} == {(3, False)}
    assert hard["output"] == [{"type": "Patient", "count": 8}] and hard["mode"] == "hard"
    assert rows(database, other_partition) == []


def test_a_bulk_delete_across_types_counts_each_type_and_an_empty_partition_counts_nothing(
    client: FlaskClient,
    small_chunks: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
):
    # Given patients and observations
    seed(client, partition, 9)
    seed(client, partition, 5, "Observation")
    # When everything is deleted, and an empty partition is asked the same
    result = delete_job(small_chunks, database, object_store, partition)
    empty = delete_job(small_chunks, database, object_store, other_partition)
    # Then the counts are per type and the empty partition's are empty
    assert result["output"] == [{"type": "Observation", "count": 5}, {"type": "Patient", "count": 9}]
    assert empty["output"] == []
