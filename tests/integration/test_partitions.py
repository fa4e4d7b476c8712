"""Partitions: names, reserved names, implicit creation, listing, and isolation seen by an attacker."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.support.fhir import base, outcome_codes, put


@pytest.mark.parametrize("name", ["system", "ADMIN", "Metadata", "a" * 65, "bad name", "x%2Fy", "..", "é"])
def test_bad_or_reserved_partition_names_are_refused_with_400(client: FlaskClient, name: str) -> None:
    resp = client.get(f"/partitions/{name}/Patient/1")
    assert resp.status_code in (400, 404)
    assert outcome_codes(resp)


def test_a_read_in_an_unknown_partition_is_empty_and_creates_nothing(
    client: FlaskClient, partition: str
) -> None:
    assert client.get(f"{base(partition)}/Patient/nope").status_code == 404
    names = [
        p["part"][0]["valueString"]
        for p in client.get("/partitions").get_json(force=True).get("parameter", [])
    ]
    assert partition not in names


def test_the_first_write_creates_the_partition_and_the_list_counts_its_resources(
    client: FlaskClient, partition: str
) -> None:
    put(client, f"{base(partition)}/Patient/a", {"resourceType": "Patient", "id": "a"})
    put(client, f"{base(partition)}/Patient/b", {"resourceType": "Patient", "id": "b"})
    listed = {
        p["part"][0]["valueString"]: p["part"][2]["valueInteger"]
        for p in client.get("/partitions").get_json(force=True)["parameter"]
    }
    assert listed[partition] == 2


def test_the_same_id_in_two_partitions_are_two_resources_that_never_cross(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given Patient/123 in both partitions with different content
    put(
        client, f"{base(partition)}/Patient/123", {"resourceType": "Patient", "id": "123", "gender": "female"}
    )
    put(
        client,
        f"{base(other_partition)}/Patient/123",
        {"resourceType": "Patient", "id": "123", "gender": "male"},
    )
    put(
        client,
        f"{base(other_partition)}/Patient/123",
        {"resourceType": "Patient", "id": "123", "gender": "other"},
    )
    # When the attacker in other_partition reads, vreads and asks for history
    mine = client.get(f"{base(partition)}/Patient/123").get_json(force=True)
    theirs = client.get(f"{base(other_partition)}/Patient/123").get_json(force=True)
    # Then each sees only its own
    assert mine["gender"] == "female" and mine["meta"]["versionId"] == "1"
    assert theirs["gender"] == "other" and theirs["meta"]["versionId"] == "2"
    assert client.get(f"{base(partition)}/Patient/123/_history/2").status_code == 404
    assert client.get(f"{base(partition)}/Patient/123/_history").get_json(force=True)["total"] == 1
    assert client.get(f"{base(partition)}/_history").get_json(force=True)["total"] == 1
    # And deleting in one leaves the other
    client.delete(f"{base(other_partition)}/Patient/123")
    assert client.get(f"{base(partition)}/Patient/123").status_code == 200
