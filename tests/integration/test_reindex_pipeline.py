"""Reindex planner, processor and finish on real PostgreSQL (run inline), seen through search and metadata."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from flask.testing import FlaskClient

from core.fhirdates import format_instant
from core.jobs import PermanentJobError
from core.settings import Settings
from orchestrator.reindex import finish_reindex, plan_reindex, weighed_rows
from storage import Database, stamp_new, write_new_resources
from storage.custom_params import list_custom
from storage.objectstore import S3ObjectStore
from storage.reindexing import reindex_batch
from tests.support.fhir import base, put
from tests.support.run_inline import InlineContext, run_inline
from workers.reindex import process_reindex

NICKNAME = {
    "resourceType": "SearchParameter",
    "id": "patient-nickname",
    "url": "https://example.org/fhir/SearchParameter/patient-nickname",
    "name": "nickname",
    "status": "active",
    "description": "A patient's nickname",
    "code": "nickname",
    "base": ["Patient"],
    "type": "string",
    "expression": "Patient.name.where(use='nickname').given",
}


@pytest.fixture
def small(settings: Settings) -> Settings:
    """Return settings with small reindex ranges and batches."""
    return replace(settings, reindex_chunk_rows=5, reindex_batch_size=2)


def seed(client: FlaskClient, partition: str, n: int) -> None:
    """Store ``n`` patients, each with the nickname Nick{i % 3}."""
    for i in range(n):
        body = {
            "resourceType": "Patient",
            "id": f"n{i}",
            "name": [{"use": "nickname", "given": [f"Nick{i % 3}"]}],
        }
        assert put(client, f"{base(partition)}/Patient/n{i}", body).status_code == 201


def search_ids(client: FlaskClient, partition: str, query: str) -> tuple[int, list[str]]:
    """Return the status and the ids a Patient search finds."""
    response = client.get(f"{base(partition)}/Patient?{query}")
    body = response.get_json(force=True)
    if response.status_code != 200:
        return response.status_code, []
    return 200, sorted(
        e["resource"]["id"] for e in body.get("entry", []) if e.get("search", {}).get("mode") != "outcome"
    )


def capability_codes(client: FlaskClient, partition: str) -> set[str]:
    """Return the Patient search parameter names the partition's CapabilityStatement lists."""
    body = client.get(f"{base(partition)}/metadata").get_json(force=True)
    patient = next(r for r in body["rest"][0]["resource"] if r["type"] == "Patient")
    return {p["name"] for p in patient["searchParam"]}


def reindex(settings: Settings, database: Database, store: S3ObjectStore, partition: str) -> dict[str, Any]:
    """Run one reindex of the partition inline."""
    d = {"transaction_time": format_instant(datetime.now(UTC))}
    return run_inline(settings, database, store, partition, d, plan_reindex, process_reindex, finish_reindex)


def test_a_custom_search_parameter_becomes_searchable_in_its_partition_only_after_its_reindex(
    client: FlaskClient,
    small: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
):
    # Given patients with nicknames in two partitions, and the SearchParameter in one of them
    seed(client, partition, 12)
    seed(client, other_partition, 12)
    assert put(client, f"{base(partition)}/SearchParameter/patient-nickname", NICKNAME).status_code == 201
    # When it is searched before the reindex / Then it is unknown, and not in the CapabilityStatement
    assert search_ids(client, partition, "nickname=Nick1")[0] == 400
    assert "nickname" not in capability_codes(client, partition)
    # When the partition is reindexed
    result = reindex(small, database, object_store, partition)
    # Then the search finds exactly the matching patients, the CapabilityStatement lists it
    assert result["searchParameters"]["activated"] == ["nickname"]
    assert result["planned"] == result["reindexed"] == 13
    assert search_ids(client, partition, "nickname=Nick1") == (200, ["n1", "n10", "n4", "n7"])
    assert "nickname" in capability_codes(client, partition)
    # And the other partition knows nothing of it
    assert search_ids(client, other_partition, "nickname=Nick1")[0] == 400
    assert "nickname" not in capability_codes(client, other_partition)


def test_writes_after_planning_are_indexed_by_their_writer_and_the_count_check_accepts_them(
    client: FlaskClient, small: Settings, database: Database, object_store: S3ObjectStore, partition: str
):
    # Given patients and the parameter, and a reindex that has been planned
    seed(client, partition, 6)
    put(client, f"{base(partition)}/SearchParameter/patient-nickname", NICKNAME)
    group = SimpleNamespace(id="r" * 32, definition={"transaction_time": format_instant(datetime.now(UTC))})
    ctx = InlineContext(partition, group.id, small, database, object_store)
    planned = list(plan_reindex(ctx, group))
    # When a patient is changed and another created before the ranges run
    changed = {"resourceType": "Patient", "id": "n0", "name": [{"use": "nickname", "given": ["Changed"]}]}
    assert put(client, f"{base(partition)}/Patient/n0", changed).status_code == 200
    created = {"resourceType": "Patient", "id": "late", "name": [{"use": "nickname", "given": ["Changed"]}]}
    assert put(client, f"{base(partition)}/Patient/late", created).status_code == 201
    parts = [
        SimpleNamespace(result=process_reindex(ctx, SimpleNamespace(definition=p, group_id=group.id)))
        for p in planned
    ]
    result = finish_reindex(ctx, group, parts)
    # Then the count check passes (one replaced since planning) and both new versions are found
    assert result["replacedDuringReindex"] == 1
    assert search_ids(client, partition, "nickname=Changed") == (200, ["late", "n0"])


def test_a_reindex_that_processed_fewer_resources_than_planned_fails_and_activates_nothing(
    client: FlaskClient, small: Settings, database: Database, object_store: S3ObjectStore, partition: str
):
    # Given a planned reindex with a new parameter
    seed(client, partition, 3)
    put(client, f"{base(partition)}/SearchParameter/patient-nickname", NICKNAME)
    group = SimpleNamespace(id="f" * 32, definition={"transaction_time": format_instant(datetime.now(UTC))})
    ctx = InlineContext(partition, group.id, small, database, object_store)
    planned = plan_reindex(ctx, group)
    parts = [
        SimpleNamespace(result=process_reindex(ctx, SimpleNamespace(definition=p, group_id=group.id)))
        for p in planned
    ]
    # When one range's result comes back short (a lost batch)
    short = next(p for p in parts if p.result.get("part") == "range")
    short.result = {**short.result, "reindexed": short.result["reindexed"] - 1}
    # Then finishing fails with the counts, and the parameter stays unsearchable
    with pytest.raises(PermanentJobError, match="covered 3 of the 4"):
        finish_reindex(ctx, group, parts)
    with database.unit_of_work(partition) as uow:
        assert [(p.code, p.status) for p in list_custom(uow)] == [("nickname", "reindexing")]
    assert search_ids(client, partition, "nickname=Nick1")[0] == 400


def test_an_unusable_search_parameter_is_reported_and_skipped(
    client: FlaskClient, small: Settings, database: Database, object_store: S3ObjectStore, partition: str
):
    # Given a composite SearchParameter (a type Bulkhead does not index)
    bad = {**NICKNAME, "id": "composite", "code": "combo", "type": "composite"}
    put(client, f"{base(partition)}/SearchParameter/composite", bad)
    # When the partition is reindexed / Then it is named as rejected and nothing is activated
    result = reindex(small, database, object_store, partition)
    assert result["searchParameters"]["activated"] == []
    assert any("composite" in r for r in result["searchParameters"]["rejected"])


def test_a_reindex_batch_stops_at_its_byte_budget_and_the_next_batch_goes_on_from_there(
    client: FlaskClient, database: Database, partition: str
) -> None:
    # Given six patients of about 2 KB each
    for i in range(6):
        body = {"resourceType": "Patient", "id": f"b{i}", "name": [{"family": "F" * 2000}]}
        assert put(client, f"{base(partition)}/Patient/b{i}", body).status_code == 201
    # When batches of at most 100 rows but only 5 KB of JSON run one after the other
    sizes, after = [], 0
    while True:
        batch = reindex_batch(database, partition, "Patient", after, 2**62, 100, max_bytes=5000)
        if batch is None:
            break
        sizes.append(batch.reindexed)
        after = batch.last
    # Then each batch holds three resources (the one that crosses the budget included) and none is skipped
    assert sizes == [3, 3]
    status, ids = search_ids(client, partition, "family=FFF")
    assert status == 200 and ids == [f"b{i}" for i in range(6)]


def test_a_range_of_a_type_with_parameters_outside_the_compiled_subset_is_weighed_for_the_lane(
    client: FlaskClient, small: Settings, database: Database, partition: str
) -> None:
    # Given the nickname parameter (compiled) and one fhirpathpy evaluates, and four patients
    costly = {
        **NICKNAME,
        "id": "long-given",
        "url": "https://example.org/fhir/SearchParameter/long-given",
        "code": "long-given",
        "expression": "Patient.name.given.where($this.length() > 3)",
    }
    put(client, f"{base(partition)}/SearchParameter/patient-nickname", NICKNAME)
    put(client, f"{base(partition)}/SearchParameter/long-given", costly)
    seed(client, partition, 4)
    # When the reindex is planned
    ctx = InlineContext(partition, "plan-weight", small, database, None)
    group = SimpleNamespace(id="plan-weight", definition={"transaction_time": "2025-01-01T00:00:00Z"})
    parts = [p for p in plan_reindex(ctx, group) if p["part"] == "range"]
    # Then each Patient counts as hundreds of resources (the parameter may spend its budget), others as one
    patient = [p for p in parts if p["type"] == "Patient"]
    others = [p for p in parts if p["type"] != "Patient"]
    assert patient and others
    assert all(p["estimated_rows"] == weighed_rows(p["rows"], 1) >= 100 * p["rows"] for p in patient)
    assert all(p["estimated_rows"] == p["rows"] for p in others)


def test_a_parameter_stored_before_the_expression_limits_is_rejected_by_the_reindex(
    small: Settings, database: Database, object_store: S3ObjectStore, partition: str
) -> None:
    # Given a SearchParameter over the limits, stored by a path that checks nothing (the bulk writer)
    evil = {**NICKNAME, "id": "evil", "code": "evil", "expression": "Patient.descendants()"}
    write_new_resources(database, partition, [stamp_new(evil, datetime.now(UTC))])
    # When the partition is reindexed / Then it is reported as rejected, naming the limit, and not used
    result = reindex(small, database, object_store, partition)
    assert result["searchParameters"]["activated"] == []
    assert any("descendants() is not allowed" in r for r in result["searchParameters"]["rejected"])
