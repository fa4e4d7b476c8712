"""PATCH and conditional writes from partition B's side: nothing of partition A is found, changed or deleted.

A (the victim) and B (the attacker) hold resources with identical ids and identifiers; A also holds
``Patient/only-a``. B's token has every scope on B. After each test A's stored rows are exactly as before.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from harness.tokens import bearer
from tests.support.arena import SECRET, Arena, check_no_secret, partition_rows, seed_arena_partition
from tests.support.fhir import FHIR, base

A_IDENTIFIER = "identifier=urn:test|id-SECRET-OF-A"
JSON_PATCH = "application/json-patch+json"
OPS = [{"op": "replace", "path": "/gender", "value": "other"}]


@pytest.fixture
def arena(secure_client, auth_keys, owner_database_url, partition, other_partition) -> Iterator[Arena]:
    """Seed A (with an extra Patient/only-a) and B; yield them with B's token; check A is unchanged after."""
    seed_arena_partition(secure_client, auth_keys, partition, SECRET)
    seed_arena_partition(secure_client, auth_keys, other_partition, "attacker")
    admin = {**bearer(auth_keys.admin()), "Content-Type": FHIR}
    only_a = {"resourceType": "Patient", "id": "only-a", "name": [{"family": SECRET}]}
    assert (
        secure_client.put(f"{base(partition)}/Patient/only-a", json=only_a, headers=admin).status_code == 201
    )
    before = partition_rows(owner_database_url, partition)
    yield Arena(partition, other_partition, auth_keys.hs256([other_partition], "system/*.cruds"))
    assert partition_rows(owner_database_url, partition) == before, "partition A changed"


def _patient_versions(client, partition: str, token: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    bundle = client.get(f"{base(partition)}/Patient?_count=50", headers=bearer(token)).get_json()
    return {e["resource"]["id"]: e["resource"]["meta"]["versionId"] for e in bundle.get("entry", [])}


def test_a_conditional_update_in_b_on_as_identifier_creates_in_b_and_leaves_a_alone(secure_client, arena):
    # Given B's token and criteria that only A's patient matches
    b = base(arena.attacker)
    headers = {**bearer(arena.token), "Content-Type": FHIR}
    # When B conditionally updates on them, with and without the id A's patient has
    plain = secure_client.put(
        f"{b}/Patient?{A_IDENTIFIER}", json={"resourceType": "Patient"}, headers=headers
    )
    # Then nothing matched in B: a new patient was created in B, and it carries nothing of A
    assert plain.status_code == 201, plain.data[:300]
    check_no_secret(plain)
    assert plain.get_json()["id"] not in {"same", "only-a"}
    # And the conditional update that names A's only-a id creates only-a in B (A's is untouched: fixture)
    named = secure_client.put(
        f"{b}/Patient?{A_IDENTIFIER}-again",
        json={"resourceType": "Patient", "id": "only-a", "gender": "male"},
        headers=headers,
    )
    assert named.status_code == 201, named.data[:300]
    assert "name" not in named.get_json()


def test_a_conditional_delete_or_patch_in_b_on_as_criteria_finds_nothing(secure_client, arena):
    # Given B's own resources at the ids A uses
    b = base(arena.attacker)
    before = _patient_versions(secure_client, arena.attacker, arena.token)
    a_reference = f"http://bulkhead.test/partitions/{arena.victim}/Patient/same"
    # When B conditionally deletes and patches on A's identifier, A's name and an absolute reference into A
    deletes = [
        secure_client.delete(f"{b}/Patient?{A_IDENTIFIER}", headers=bearer(arena.token)),
        secure_client.delete(f"{b}/Patient?name={SECRET}", headers=bearer(arena.token)),
        secure_client.delete(f"{b}/Observation?subject={a_reference}", headers=bearer(arena.token)),
    ]
    patched = secure_client.patch(
        f"{b}/Patient?{A_IDENTIFIER}", json=OPS, headers={**bearer(arena.token), "Content-Type": JSON_PATCH}
    )
    # Then the deletes found nothing (204), the patch found nothing (404), and B's own resources are unchanged
    assert [r.status_code for r in deletes] == [204, 204, 204]
    assert patched.status_code == 404
    check_no_secret(patched, echo=A_IDENTIFIER)
    assert _patient_versions(secure_client, arena.attacker, arena.token) == before
    assert secure_client.get(f"{b}/Observation/obs", headers=bearer(arena.token)).status_code == 200


def test_a_patch_in_b_of_an_id_only_a_has_is_404_and_of_a_shared_id_changes_bs_only(secure_client, arena):
    # Given Patient/only-a in A only, and Patient/same in both
    b = base(arena.attacker)
    headers = {**bearer(arena.token), "Content-Type": JSON_PATCH}
    # When B patches both ids on its own base
    missing = secure_client.patch(f"{b}/Patient/only-a", json=OPS, headers=headers)
    shared = secure_client.patch(f"{b}/Patient/same", json=OPS, headers=headers)
    # Then only-a is unknown to B, and same is B's own (B's name, B's next version)
    assert missing.status_code == 404
    check_no_secret(missing)
    assert shared.status_code == 200, shared.data[:300]
    assert shared.get_json()["name"][0]["family"] == "attacker"
    assert shared.get_json()["meta"]["versionId"] == "3"


def test_bs_token_cannot_patch_or_conditionally_write_in_a(secure_client, arena):
    # Given B's token with every scope, on A's base
    a = base(arena.victim)
    auth = bearer(arena.token)
    # When it patches, conditionally patches, updates and deletes there
    responses = [
        secure_client.patch(f"{a}/Patient/same", json=OPS, headers={**auth, "Content-Type": JSON_PATCH}),
        secure_client.patch(
            f"{a}/Patient?{A_IDENTIFIER}", json=OPS, headers={**auth, "Content-Type": JSON_PATCH}
        ),
        secure_client.put(
            f"{a}/Patient?{A_IDENTIFIER}",
            json={"resourceType": "Patient"},
            headers={**auth, "Content-Type": FHIR},
        ),
        secure_client.delete(f"{a}/Patient?{A_IDENTIFIER}", headers=auth),
    ]
    # Then every one is 403 and reveals nothing (A is unchanged: fixture)
    for response in responses:
        assert response.status_code == 403, response.data[:300]
        check_no_secret(response)


def test_bundle_entries_in_b_with_as_ids_and_criteria_reach_nothing_of_a(secure_client, arena):
    # Given a batch and a transaction in B that patch A's only id and write conditionally on A's identifier
    b = base(arena.attacker)
    headers = {**bearer(arena.token), "Content-Type": FHIR}
    binary = {
        "resourceType": "Binary",
        "contentType": JSON_PATCH,
        "data": base64.b64encode(orjson.dumps(OPS)).decode(),
    }
    entries = [
        {"request": {"method": "PATCH", "url": "Patient/only-a"}, "resource": binary},
        {"request": {"method": "DELETE", "url": f"Patient?{A_IDENTIFIER}"}},
        {
            "request": {"method": "PUT", "url": f"Patient?{A_IDENTIFIER}"},
            "resource": {"resourceType": "Patient"},
        },
        {"request": {"method": "PATCH", "url": f"Patient?{A_IDENTIFIER}"}, "resource": binary},
    ]
    # When both are posted to B's base
    batch = secure_client.post(
        f"{b}/", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=headers
    )
    transaction = secure_client.post(
        f"{b}/",
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries[1:3]},
        headers=headers,
    )
    # Then the patches found nothing (404), the delete nothing, the updates created in B, and nothing shows A
    assert batch.status_code == 200, batch.data[:300]
    statuses = [e["response"]["status"][:3] for e in batch.get_json()["entry"]]
    assert statuses == ["404", "204", "201", "404"]
    assert transaction.status_code == 200, transaction.data[:300]
    for response in (batch, transaction):
        # (the outcomes name each entry by its URL, which quotes B's own criteria back: those are left out)
        exposed = orjson.dumps(response.get_json()["entry"]).decode().replace(A_IDENTIFIER, "")
        assert SECRET not in exposed
