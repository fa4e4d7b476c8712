"""The bulk writer: new resources, COPY-written into one partition, exactly as given, and nowhere else."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from core.errors import Conflict, InvalidRequest
from storage import Database, NewResource, stamp_new, write_new_resources
from storage.search.tables import INDEX_TABLES
from tests.support.fhir import put
from tools.synthetic import generate


def _stamped(patients: int, seed: int) -> list[NewResource]:
    now = datetime.now(UTC)
    return [stamp_new(r, now) for r in generate(patients, seed=seed)]


def _read(client: FlaskClient, partition: str, item: NewResource) -> Any:
    return client.get(f"/partitions/{partition}/{item.resource_type}/{item.resource_id}")


def test_bulk_written_resources_read_back_through_rest_byte_for_byte_as_version_one(
    database: Database, client: FlaskClient, partition: str
) -> None:
    # Given the resources of three synthetic patients
    items = _stamped(3, seed=11)
    # When they are bulk-written in small batches
    result = write_new_resources(database, partition, iter(items), batch_rows=17)
    # Then every one reads back with the exact bytes given, as version 1
    assert result.resources == len(items)
    assert sum(result.counts.values()) == len(items)
    assert result.batches == -(-len(items) // 17)
    for item in items:
        response = _read(client, partition, item)
        assert response.status_code == 200, item.resource_id
        assert response.data == item.raw
        assert response.headers["ETag"] == 'W/"1"'
    # And the partition lists exactly that many live resources
    listed = {p.name: p.resource_count for p in database.partitions()}
    assert listed[partition] == len(items)


def test_a_bulk_write_never_touches_another_partition_holding_the_same_ids(
    database: Database, client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given the other partition holds seed 5's resources already, and one of them was updated since
    theirs = _stamped(2, seed=5)
    write_new_resources(database, other_partition, iter(theirs))
    patient = next(i for i in theirs if i.resource_type == "Patient")
    path = f"/partitions/{other_partition}/Patient/{patient.resource_id}"
    assert (
        put(client, path, {"resourceType": "Patient", "id": patient.resource_id, "active": False}).status_code
        == 200
    )
    before = {i.resource_id: _read(client, other_partition, i).data for i in theirs}
    # When the same ids, with other content, are bulk-written into this partition
    ours = [stamp_new({**i.resource, "language": "en"}, datetime.now(UTC)) for i in theirs]
    result = write_new_resources(database, partition, iter(ours))
    # Then this partition has its own copies
    assert result.resources == len(ours)
    assert all(_read(client, partition, i).data == i.raw for i in ours)
    # And the other partition's resources are byte for byte what they were, versions included
    after = {i.resource_id: _read(client, other_partition, i).data for i in theirs}
    assert after == before
    assert client.get(path).headers["ETag"] == 'W/"2"'
    listed = {p.name: p.resource_count for p in database.partitions()}
    assert listed[other_partition] == len(theirs)


def test_a_resource_that_already_exists_is_a_conflict_and_its_batch_writes_nothing(
    database: Database, client: FlaskClient, partition: str
) -> None:
    # Given a patient created through the REST API
    items = _stamped(1, seed=21)
    patient = next(i for i in items if i.resource_type == "Patient")
    path = f"/partitions/{partition}/Patient/{patient.resource_id}"
    created = put(client, path, {"resourceType": "Patient", "id": patient.resource_id, "gender": "other"})
    assert created.status_code == 201
    # When a batch that contains the same id is bulk-written
    with pytest.raises(Conflict) as refused:
        write_new_resources(database, partition, iter(items), batch_rows=len(items))
    # Then the error names it, no resource of the batch exists, and the patient is unchanged
    assert f"Patient/{patient.resource_id}" in refused.value.message
    for item in items:
        if item is not patient:
            assert _read(client, partition, item).status_code == 404
    assert client.get(path).data == created.data


def test_the_same_id_twice_in_one_input_is_a_conflict_and_writes_nothing(
    database: Database, client: FlaskClient, partition: str
) -> None:
    # Given an input that repeats its first resource at the end
    items = _stamped(1, seed=22)
    # When it is bulk-written in one batch
    with pytest.raises(Conflict) as refused:
        write_new_resources(database, partition, iter([*items, items[0]]), batch_rows=1000)
    # Then it is refused, naming the repeated resource, and nothing was written
    assert f"{items[0].resource_type}/{items[0].resource_id}" in refused.value.message
    assert all(_read(client, partition, i).status_code == 404 for i in items)


def test_bad_input_is_refused_before_anything_is_written_and_no_partition_is_created(
    database: Database, partition: str
) -> None:
    # Given a resource with an invalid id and one of an unknown type
    now = datetime.now(UTC)
    bad_id = stamp_new({"resourceType": "Patient", "id": "no spaces/allowed"}, now)
    bad_type = stamp_new({"resourceType": "Patientx", "id": "p1"}, now)
    for bad in (bad_id, bad_type):
        # When each is bulk-written
        with pytest.raises(InvalidRequest):
            write_new_resources(database, partition, iter([bad]))
    # Then the partition was not even created
    assert partition not in {p.name for p in database.partitions()}


def test_the_writer_streams_its_input_holding_at_most_one_batch(
    database: Database, client: FlaskClient, partition: str
) -> None:
    # Given an input that counts how far it has been read
    items = _stamped(4, seed=23)
    pulled = 0
    lead: list[int] = []
    written = 0

    def source() -> Iterator[NewResource]:
        nonlocal pulled
        for item in items:
            pulled += 1
            yield item

    def committed(batch: Any) -> None:
        nonlocal written
        written += len(batch)
        lead.append(pulled - written)
        # And each batch is readable as soon as it is committed, before the rest of the input is read
        assert _read(client, partition, batch[-1]).status_code == 200

    # When it is bulk-written in batches of 25
    write_new_resources(database, partition, source(), batch_rows=25, on_batch=committed)
    # Then the writer never read more than one batch ahead of what it had written
    assert written == len(items)
    assert len(lead) == -(-len(items) // 25)
    assert max(lead) == 0


def _index_rows(database: Database, partition: str, rtype: str, rid: str) -> set[tuple[Any, ...]]:
    """Return a resource's search-index rows without partition and surrogate ids."""
    with database.unit_of_work(partition) as uow:
        stored = uow.resources.current(rtype, rid)
        pid = uow.resources.partition_id()
        assert stored is not None and pid is not None
        found: set[tuple[Any, ...]] = set()
        for kind, table in INDEX_TABLES.items():
            rows = uow.session.execute(
                select(table).where(table.c.partition_id == pid, table.c.surrogate_id == stored.surrogate_id)
            ).all()
            found |= {(kind, row.resource_type, row.param, *tuple(row)[4:]) for row in rows}
        return found


def test_bulk_written_resources_get_the_same_search_index_rows_as_rest_writes(
    database: Database, client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given a patient and an observation written through the REST API in one partition
    items = [i for i in _stamped(1, seed=24) if i.resource_type in {"Patient", "Observation"}][:2]
    for item in items:
        path = f"/partitions/{other_partition}/{item.resource_type}/{item.resource_id}"
        assert put(client, path, dict(item.resource)).status_code == 201
    # When the same resources are bulk-written into another partition
    write_new_resources(database, partition, iter(items))
    # Then each has the same index rows in both partitions, and there are some
    for item in items:
        bulk = _index_rows(database, partition, item.resource_type, item.resource_id)
        rest = _index_rows(database, other_partition, item.resource_type, item.resource_id)
        assert bulk == rest
        assert len(bulk) > 5


def test_bulk_written_resources_are_found_by_search_in_their_partition_only(
    database: Database, client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given two patients' records bulk-written into this partition only
    items = _stamped(2, seed=25)
    write_new_resources(database, partition, iter(items))
    patient = next(i for i in items if i.resource_type == "Patient")
    family = patient.resource["name"][0]["family"]
    observations = {
        i.resource_id
        for i in items
        if i.resource_type == "Observation"
        and i.resource["subject"]["reference"] == f"Patient/{patient.resource_id}"
    }
    # When they are searched by name and by subject here, and in the other partition
    by_name = client.get(f"/partitions/{partition}/Patient", query_string={"name": family})
    by_subject = client.get(
        f"/partitions/{partition}/Observation",
        query_string={"subject": f"Patient/{patient.resource_id}", "_count": "1000"},
    )
    elsewhere = client.get(f"/partitions/{other_partition}/Patient", query_string={"name": family})
    # Then this partition finds them, with the stored bytes, and the other partition finds nothing
    assert by_name.status_code == 200
    named = by_name.get_json(force=True)
    assert patient.resource_id in {e["resource"]["id"] for e in named["entry"]}
    assert all(e["resource"]["name"][0]["family"] == family for e in named["entry"])
    assert patient.raw in by_name.data
    assert {e["resource"]["id"] for e in by_subject.get_json(force=True)["entry"]} == observations
    assert elsewhere.status_code == 200
    assert elsewhere.get_json(force=True).get("entry", []) == []
