"""Conditional create (If-None-Exist) and the matching functions other layers reuse."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from services.conditional import conditional_create_in, find_matching, parse_criteria
from storage import Database
from storage.search import compartment_members, matching_surrogate_ids, select_surrogate_ids
from tests.support.fhir import base, post, put

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:test", "value": "MRN-1"}],
    "name": [{"family": "Conditional"}],
}
CONDITION = {"If-None-Exist": "identifier=urn:test|MRN-1"}


def count(client: FlaskClient, partition: str, query: str) -> int:
    total: int = client.get(f"{base(partition)}/{query}").get_json(force=True)["total"]
    return total


def test_if_none_exist_creates_once_then_returns_the_existing_resource(
    client: FlaskClient, partition: str
) -> None:
    # Given no matching patient, When a conditional create is sent twice
    first = post(client, f"{base(partition)}/Patient", PATIENT, **CONDITION)
    second = post(client, f"{base(partition)}/Patient", PATIENT, **CONDITION)
    # Then the first creates (201, Location) and the second answers 200 with the same resource
    assert first.status_code == 201 and "Location" in first.headers
    assert second.status_code == 200 and "Location" not in second.headers
    assert second.get_json(force=True)["id"] == first.get_json(force=True)["id"]
    assert count(client, partition, "Patient?identifier=urn:test|MRN-1") == 1


def test_if_none_exist_matching_several_is_412_and_stores_nothing(
    client: FlaskClient, partition: str
) -> None:
    for rid in ("d1", "d2"):
        put(client, f"{base(partition)}/Patient/{rid}", {**PATIENT, "id": rid})
    refused = post(client, f"{base(partition)}/Patient", PATIENT, **CONDITION)
    assert refused.status_code == 412
    assert refused.get_json(force=True)["resourceType"] == "OperationOutcome"
    assert count(client, partition, "Patient") == 2


def test_if_none_exist_with_bad_criteria_is_400_and_stores_nothing(
    client: FlaskClient, partition: str
) -> None:
    for condition in ("shoe-size=42", "", "identifier=x&_count=1", "birthdate=tomorrow"):
        response = post(client, f"{base(partition)}/Patient", PATIENT, **{"If-None-Exist": condition})
        assert response.status_code == 400, condition
    assert count(client, partition, "Patient") == 0


def test_concurrent_conditional_creates_with_the_same_criteria_create_one_resource(
    app: Flask, partition: str
) -> None:
    # Given eight clients sending the same conditional create at once
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(post(client, f"{base(partition)}/Patient", PATIENT, **CONDITION).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one created and the others found it
    assert sorted(statuses) == [200] * 7 + [201]
    assert count(app.test_client(), partition, "Patient") == 1


def test_find_matching_inside_a_unit_of_work_sees_its_own_uncommitted_writes(
    database: Database, partition: str
) -> None:
    # Given a unit of work that created a patient and has not committed
    with database.unit_of_work(partition) as uow:
        condition = parse_criteria(uow, "Patient", "identifier=urn:test|MRN-1")
        created = conditional_create_in(uow, "Patient", b"{}", dict(PATIENT), condition)
        assert created.created
        # When the same condition is checked again in that unit of work (a transaction Bundle)
        again = conditional_create_in(uow, "Patient", b"{}", dict(PATIENT), condition)
        found = find_matching(uow, parse_criteria(uow, "Patient", "Patient?identifier=urn:test|MRN-1"))
        # Then it finds the uncommitted patient instead of creating a second
        assert not again.created and again.stored.resource_id == created.stored.resource_id
        assert [v.resource_id for v in found] == [created.stored.resource_id]
    # And nothing stays after a rollback
    with database.unit_of_work(partition) as uow:
        assert find_matching(uow, parse_criteria(uow, "Patient", "identifier=urn:test|MRN-1")) == []


def test_selects_for_bulk_jobs_match_or_ed_queries_ranges_and_compartments(
    client: FlaskClient, database: Database, partition: str
) -> None:
    # Given patients and observations
    b = base(partition)
    for rid, gender in (("a", "male"), ("b", "female"), ("c", "other")):
        put(client, f"{b}/Patient/{rid}", {"resourceType": "Patient", "id": rid, "gender": gender})
    for rid, subject in (("oa", "a"), ("ob", "b"), ("oc", "c")):
        body = {"resourceType": "Observation", "id": rid, "status": "final", "code": {"text": "x"}}
        put(client, f"{b}/Observation/{rid}", {**body, "subject": {"reference": f"Patient/{subject}"}})
    with database.unit_of_work(partition) as uow:
        pid = uow.resources.partition_id()
        session = uow.session

        def rids(stmt: Any) -> set[str]:
            sids = list(session.scalars(stmt))
            return {v.resource_id for v in uow.resources.by_surrogate_ids(sids)}

        # When matching a single query, a list of OR-ed queries, a surrogate range, a compartment
        assert rids(matching_surrogate_ids(session, pid, "Patient", "gender=male")) == {"a"}
        either = [[("gender", "male")], [("gender", "other")]]
        assert rids(matching_surrogate_ids(session, pid, "Patient", either)) == {"a", "c"}
        all_sids = select_surrogate_ids(session, pid, "Patient", [("gender", "male,female,other")])
        assert len(all_sids) == 3 and all_sids == sorted(all_sids)
        assert (
            len(select_surrogate_ids(session, pid, "Patient", "gender:missing=false", low=all_sids[1])) == 2
        )
        members = compartment_members(
            session, pid, "Observation", ["subject", "performer"], "Patient", ["a", "b"]
        )
        # Then each gives exactly the resources of this partition it should
        assert rids(members) == {"oa", "ob"}
        assert rids(compartment_members(session, pid, "Observation", ["subject"], "Patient", None)) == {
            "oa",
            "ob",
            "oc",
        }
    assert rids is not None
