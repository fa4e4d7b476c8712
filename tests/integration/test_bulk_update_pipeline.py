"""Bulk update's planner, processor and finish on real PostgreSQL and S3 (run inline)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from core.fhirdates import format_instant
from core.settings import Settings
from harness.services import S3Settings
from orchestrator.bulk_edit import UPDATE, finish_bulk_edit, plan_bulk_edit
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base, put
from tests.support.run_inline import Cancelled, InlineContext, run_inline
from workers.bulk_edit import process_bulk_edit


@pytest.fixture
def small_chunks(settings: Settings, s3_settings: S3Settings) -> Settings:
    """Return settings with tiny ranges and batches."""
    return replace(s3_settings.apply(settings), bulk_edit_chunk_rows=6, bulk_edit_batch_size=4)


def op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """Build one FHIRPath Patch operation."""
    body = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    return {"name": "operation", "part": body + [{"name": k, **v} for k, v in parts.items()]}


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    """Return a Parameters body of operations."""
    return {"resourceType": "Parameters", "parameter": list(ops)}


def seed(client: FlaskClient, partition: str, n: int, **extra: Any) -> None:
    """Store ``n`` patients x0.. with the given members."""
    for i in range(n):
        response = put(
            client,
            f"{base(partition)}/Patient/x{i}",
            {"resourceType": "Patient", "id": f"x{i}", "birthDate": "1970-01-01", **extra},
        )
        assert response.status_code == 201, response.get_json()


def current(database: Database, partition: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """Return id -> (version, resource) of the current versions."""
    with database.unit_of_work(partition) as uow:
        found = uow.session.execute(
            text("SELECT resource_id, version, raw FROM resource WHERE NOT is_history AND NOT is_deleted")
        ).all()
    return {r[0]: (r[1], orjson.loads(r[2])) for r in found}


def definition(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Return a bulk update job definition."""
    return {
        "op": UPDATE,
        "query": [],
        "patch": body,
        "transaction_time": format_instant(datetime.now(UTC)),
        "types": ["Patient"],
        **extra,
    }


def test_every_match_gets_a_new_version_with_the_patch_and_other_partitions_are_untouched(
    client: FlaskClient,
    small_chunks: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
):
    # Given 15 patients here and the same ids in another partition
    seed(client, partition, 15, active=True)
    seed(client, other_partition, 15, active=True)
    before_other = current(database, other_partition)
    body = patch(
        op("replace", "Patient.active", value={"valueBoolean": False}),
        op("upsert", "Patient", name={"valueString": "gender"}, value={"valueCode": "unknown"}),
    )
    # When the bulk update runs
    result = run_inline(
        small_chunks,
        database,
        object_store,
        partition,
        definition(body),
        plan_bulk_edit,
        process_bulk_edit,
        finish_bulk_edit,
    )
    # Then all 15 are version 2 with the change, and the other partition is as it was
    assert result["output"] == [{"type": "Patient", "count": 15}] and result["error"] == []
    after = current(database, partition)
    assert {v for v, _r in after.values()} == {2}
    assert all(r["active"] is False and r["gender"] == "unknown" for _v, r in after.values())
    assert all(r["meta"]["versionId"] == "2" for _v, r in after.values())
    assert current(database, other_partition) == before_other


def test_a_resource_the_patch_cannot_apply_to_is_reported_and_the_others_are_updated(
    client: FlaskClient,
    small_chunks: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
):
    # Given 5 patients with a birthDate and 3 without
    seed(client, partition, 5)
    for i in range(5, 8):
        put(client, f"{base(partition)}/Patient/x{i}", {"resourceType": "Patient", "id": f"x{i}"})
    # When birthDate is replaced (a replace needs the element to exist)
    body = patch(op("replace", "Patient.birthDate", value={"valueDate": "1980-02-02"}))
    result = run_inline(
        small_chunks,
        database,
        object_store,
        partition,
        definition(body),
        plan_bulk_edit,
        process_bulk_edit,
        finish_bulk_edit,
    )
    # Then 5 are updated and 3 are in the error file, each named
    assert result["output"] == [{"type": "Patient", "count": 5}]
    [error] = result["error"]
    assert error["count"] == 3
    text_ = b"".join(object_store.get_stream(error["key"])).decode()
    assert all(f"Patient/x{i}" in text_ for i in range(5, 8))
    assert {v for v, _r in current(database, partition).values()} == {1, 2}


def test_a_retried_range_updates_each_resource_once_and_counts_stay_exact(
    client: FlaskClient,
    small_chunks: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
):
    # Given 12 patients / When every range is processed twice (a retried chunk)
    seed(client, partition, 12)
    body = patch(op("replace", "Patient.birthDate", value={"valueDate": "1999-09-09"}))
    result = run_inline(
        small_chunks,
        database,
        object_store,
        partition,
        definition(body),
        plan_bulk_edit,
        process_bulk_edit,
        finish_bulk_edit,
        repeat=range(10),
    )
    # Then each patient has exactly one new version and the count is 12
    assert result["output"] == [{"type": "Patient", "count": 12}]
    assert {v for v, _r in current(database, partition).values()} == {2}


def test_a_cancelled_update_keeps_what_it_committed_and_the_ledger_says_how_many(
    client: FlaskClient,
    small_chunks: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
):
    # Given 12 patients in ranges of 6 and batches of 4
    seed(client, partition, 12)
    body = patch(op("replace", "Patient.birthDate", value={"valueDate": "2001-01-01"}))
    group = type("Group", (), {"id": "g" * 32, "definition": definition(body)})()
    ctx = InlineContext(partition, group.id, small_chunks, database, object_store, cancel_after=1)
    [first, *_rest] = plan_bulk_edit(ctx, group)
    job = type("Job", (), {"id": "j1", "group_id": group.id, "definition": first})()
    # When the job is cancelled at its first heartbeat (after its first committed batch)
    with pytest.raises(Cancelled):
        process_bulk_edit(ctx, job)
    # Then the first batch's 4 resources stay updated and the ledger counts exactly them
    from core.jobs import JobInfo, JobStatus
    from orchestrator.bulk_edit import committed_counts

    cancelled = JobInfo(group.id, group.id, "bulk-update", partition, {}, JobStatus.CANCELLED)
    assert committed_counts(database, cancelled) == {"Patient": 4}
    assert sorted(v for v, _r in current(database, partition).values()) == [1] * 8 + [2] * 4
