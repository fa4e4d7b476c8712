"""Transactions from the attacker's side: a Bundle posted in partition B never reaches partition A."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.support.fhir import base, post, put
from tests.support.stored_state import assert_outcome, stored_state


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    """Return a Bundle of ``kind`` holding ``entries``."""
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def seed_same_ids(client: FlaskClient, victim: str, attacker: str) -> None:
    """Store Patient/p1 in both partitions; the victim's has three versions, the attacker's one."""
    for n in range(3):
        put(
            client,
            f"{base(victim)}/Patient/p1",
            {"resourceType": "Patient", "id": "p1", "birthDate": f"190{n}"},
        )
    put(client, f"{base(victim)}/Patient/only-a", {"resourceType": "Patient", "id": "only-a"})
    put(client, f"{base(attacker)}/Patient/p1", {"resourceType": "Patient", "id": "p1", "active": True})


def victim_view(client: FlaskClient, victim: str) -> tuple[bytes, bytes, int]:
    """Return what the victim's resources look like right now."""
    p1 = client.get(f"{base(victim)}/Patient/p1")
    only = client.get(f"{base(victim)}/Patient/only-a")
    total = client.get(f"{base(victim)}/_history").get_json(force=True)["total"]
    return p1.data, only.data, total


def test_a_transaction_in_b_updates_and_deletes_only_bs_resources(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given the same Patient/p1 in A (victim) and B (attacker)
    victim, attacker = partition, other_partition
    seed_same_ids(client, victim, attacker)
    before = victim_view(client, victim)
    # When B's transaction updates p1, deletes p1's namesake, and writes only-a
    tx = bundle(
        "transaction",
        {
            "resource": {"resourceType": "Patient", "id": "p1", "gender": "other"},
            "request": {"method": "PUT", "url": "Patient/p1"},
        },
        {"request": {"method": "DELETE", "url": "Patient/only-a"}},
    )
    resp = post(client, base(attacker), tx)
    # Then B's p1 is version 2, deleting a name B never had is a no-op, and A is untouched
    assert resp.status_code == 200, resp.data
    assert resp.get_json(force=True)["entry"][0]["resource"]["meta"]["versionId"] == "2"
    assert victim_view(client, victim) == before
    assert client.get(f"{base(attacker)}/Patient/only-a").status_code == 404


def test_a_transaction_in_b_cannot_read_as_resources(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    victim, attacker = partition, other_partition
    seed_same_ids(client, victim, attacker)
    # When B reads only-a and A's third version of p1 in a batch
    batch = bundle(
        "batch",
        {"request": {"method": "GET", "url": "Patient/only-a"}},
        {"request": {"method": "GET", "url": "Patient/p1/_history/3"}},
        {"request": {"method": "GET", "url": "Patient/p1"}},
    )
    body = post(client, base(attacker), batch).get_json(force=True)
    # Then both are unknown in B, and p1 is B's own
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["404 Not Found", "404 Not Found", "200 OK"]
    assert body["entry"][2]["resource"]["active"] is True
    assert "birthDate" not in body["entry"][2]["resource"]
    # And in a transaction the unknown read fails the whole request with 404
    tx = bundle("transaction", {"request": {"method": "GET", "url": "Patient/only-a"}})
    assert_outcome(post(client, base(attacker), tx), 404, "not-found")


def test_if_match_in_b_is_checked_against_bs_version_not_as(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    victim, attacker = partition, other_partition
    seed_same_ids(client, victim, attacker)
    before = victim_view(client, victim)
    tx = bundle(
        "transaction",
        {
            "resource": {"resourceType": "Patient", "id": "p1"},
            "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": 'W/"3"'},
        },
    )
    assert_outcome(post(client, base(attacker), tx), 412)
    assert victim_view(client, victim) == before


def test_absolute_urls_of_as_base_in_bs_transaction_are_refused(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    victim, attacker = partition, other_partition
    seed_same_ids(client, victim, attacker)
    before_a = victim_view(client, victim)
    before = stored_state(client, victim, attacker)
    a_base = f"http://bulkhead.test/partitions/{victim}"
    for method, resource in (
        ("PUT", {"resourceType": "Patient", "id": "p1"}),
        ("DELETE", None),
        ("GET", None),
    ):
        item: dict[str, Any] = {"request": {"method": method, "url": f"{a_base}/Patient/p1"}}
        if resource is not None:
            item["resource"] = resource
        body = assert_outcome(post(client, base(attacker), bundle("transaction", item)), 400)
        assert "cross-partition" in body["issue"][0]["diagnostics"]
    # The root base is partition default, another partition too
    root_url = {"request": {"method": "DELETE", "url": "http://bulkhead.test/Patient/p1"}}
    assert_outcome(post(client, base(attacker), bundle("transaction", root_url)), 400)
    assert victim_view(client, victim) == before_a
    assert stored_state(client, victim, attacker) == before


def test_references_into_another_partition_are_refused(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    victim, attacker = partition, other_partition
    seed_same_ids(client, victim, attacker)
    before = stored_state(client, victim, attacker)
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"http://bulkhead.test/partitions/{victim}/Patient/only-a"},
    }
    tx = bundle("transaction", {"resource": obs, "request": {"method": "POST", "url": "Observation"}})
    body = assert_outcome(post(client, base(attacker), tx), 400)
    assert "cross-partition references are not supported" in body["issue"][0]["diagnostics"]
    batch = bundle("batch", {"resource": obs, "request": {"method": "POST", "url": "Observation"}})
    answer = post(client, base(attacker), batch).get_json(force=True)
    assert answer["entry"][0]["response"]["status"] == "400 Bad Request"
    assert stored_state(client, victim, attacker) == before


def test_the_same_transaction_in_two_partitions_creates_two_independent_sets(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given one transaction with client ids and a urn:uuid reference
    urn = "urn:uuid:2b7e6f1c-1111-4a4a-9c9c-000000000001"
    tx = bundle(
        "transaction",
        {
            "fullUrl": urn,
            "resource": {"resourceType": "Patient", "id": "same"},
            "request": {"method": "PUT", "url": "Patient/same"},
        },
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": urn},
            },
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    # When it is posted in A and in B
    a = post(client, base(partition), tx).get_json(force=True)
    b = post(client, base(other_partition), tx).get_json(force=True)
    # Then each partition has its own patient version 1 and its own observation
    assert a["entry"][0]["resource"]["meta"]["versionId"] == "1"
    assert b["entry"][0]["resource"]["meta"]["versionId"] == "1"
    obs_a, obs_b = a["entry"][1]["resource"]["id"], b["entry"][1]["resource"]["id"]
    assert client.get(f"{base(other_partition)}/Observation/{obs_a}").status_code == 404
    assert client.get(f"{base(partition)}/Observation/{obs_b}").status_code == 404
    assert a["entry"][1]["resource"]["subject"]["reference"] == "Patient/same"


def test_conditional_and_search_entries_never_match_across_partitions(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given a patient with identifier 7 in A only
    victim, attacker = partition, other_partition
    marked = {"resourceType": "Patient", "id": "m1", "identifier": [{"system": "urn:ids", "value": "7"}]}
    put(client, f"{base(victim)}/Patient/m1", marked)
    before = victim_view_of(client, victim)
    # When B conditionally creates on that identifier and searches for it
    tx = bundle(
        "transaction",
        {
            "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:ids", "value": "7"}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:ids|7"},
        },
        {"request": {"method": "GET", "url": "Patient?identifier=urn:ids|7"}},
        {"request": {"method": "GET", "url": "Patient?_id=m1"}},
    )
    entries = post(client, base(attacker), tx).get_json(force=True)["entry"]
    # Then B created its own patient, and its searches see only its own
    assert entries[0]["response"]["status"] == "201 Created"
    own_id = entries[0]["resource"]["id"]
    assert own_id != "m1"
    assert [e["resource"]["id"] for e in entries[1]["resource"]["entry"]] == [own_id]
    assert "entry" not in entries[2]["resource"]
    assert victim_view_of(client, victim) == before


def victim_view_of(client: FlaskClient, victim: str) -> tuple[bytes, int]:
    """Return the victim's marked patient and history total."""
    total = client.get(f"{base(victim)}/_history").get_json(force=True)["total"]
    return client.get(f"{base(victim)}/Patient/m1").data, total
