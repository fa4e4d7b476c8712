"""Authentication and authorization: bearer tokens bound to partitions and SMART system scopes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from api import create_app
from harness.tokens import BAD_TOKENS, AuthKeys, bearer
from tests.support.fhir import base, outcome_codes, put

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female"}


@pytest.fixture
def seeded(secure_client, auth_keys: AuthKeys, partition: str) -> str:
    """Store Patient/p1 in ``partition`` with a token for it; return the partition."""
    token = auth_keys.hs256([partition])
    assert put(secure_client, f"{base(partition)}/Patient/p1", PATIENT, **bearer(token)).status_code == 201
    return partition


def _read(client, partition: str, token: str | None):  # type: ignore[no-untyped-def]
    headers = bearer(token) if token is not None else {}
    return client.get(f"{base(partition)}/Patient/p1", headers=headers)


def test_authentication_is_off_by_default_and_no_token_is_needed(client, partition):
    # Given the default application (authentication off)
    # When a resource is written and read without any token
    created = put(client, f"{base(partition)}/Patient/p1", PATIENT)
    read = client.get(f"{base(partition)}/Patient/p1")
    # Then both succeed
    assert created.status_code == 201
    assert read.status_code == 200


def test_a_request_without_a_token_gets_401_with_an_operation_outcome_and_a_challenge(secure_client, seeded):
    # Given a server with authentication on
    # When a resource is read without a token
    response = _read(secure_client, seeded, None)
    # Then the answer is 401, an OperationOutcome and a Bearer challenge
    assert response.status_code == 401
    assert outcome_codes(response) == ["login"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kind", ["hs256", "rs256", "es256"])
def test_a_valid_token_for_the_partition_reads_its_resources(secure_client, auth_keys, seeded, kind):
    # Given a token of each supported algorithm for the partition
    token = getattr(auth_keys, kind)([seeded], "system/*.rs")
    # When it reads the partition's patient
    response = _read(secure_client, seeded, token)
    # Then it gets it
    assert response.status_code == 200
    assert response.get_json()["id"] == "p1"


def test_a_token_for_one_partition_is_refused_in_another(secure_client, auth_keys, seeded, other_partition):
    # Given Patient/p1 in both partitions and a token for the other partition only
    put(secure_client, f"{base(other_partition)}/Patient/p1", PATIENT, **bearer(auth_keys.admin()))
    token = auth_keys.hs256([other_partition])
    # When it reads the first partition's patient
    response = _read(secure_client, seeded, token)
    # Then it is forbidden, and nothing of the resource is in the answer
    assert response.status_code == 403
    assert outcome_codes(response) == ["forbidden"]
    assert b"female" not in response.data


def test_a_token_listing_several_partitions_may_use_each_of_them(
    secure_client, auth_keys, seeded, other_partition
):
    # Given a token for two partitions
    token = auth_keys.hs256([seeded, other_partition])
    # When it reads in both
    first = _read(secure_client, seeded, token)
    second = _read(secure_client, other_partition, token)
    # Then it is allowed in both (the second simply has no such patient)
    assert first.status_code == 200
    assert second.status_code == 404


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_a_bad_token_gets_401_and_reveals_nothing(secure_client, auth_keys, seeded, case):
    # Given a token that is expired, unsigned, wrongly signed, algorithm-confused, oversized or malformed
    token = BAD_TOKENS[case](auth_keys, seeded)
    # When it is used to read the partition's patient
    response = _read(secure_client, seeded, token)
    # Then the answer is 401 with an OperationOutcome and no resource data
    assert response.status_code == 401, response.data
    assert outcome_codes(response) == ["login"]
    assert b"female" not in response.data


def test_a_non_bearer_authorization_header_is_refused(secure_client, seeded):
    # Given basic credentials instead of a bearer token
    # When they are sent
    response = secure_client.get(f"{base(seeded)}/Patient/p1", headers={"Authorization": "Basic YTpi"})
    # Then the answer is 401
    assert response.status_code == 401


def test_read_scopes_allow_reads_but_not_writes(secure_client, auth_keys, seeded):
    # Given a v2 read+search scope on every type and a v1 read scope
    for scope in ("system/*.rs", "system/*.read"):
        token = auth_keys.hs256([seeded], scope)
        # When the token reads, then writes
        read = _read(secure_client, seeded, token)
        write = put(
            secure_client, f"{base(seeded)}/Patient/p1", {**PATIENT, "gender": "male"}, **bearer(token)
        )
        deleted = secure_client.delete(f"{base(seeded)}/Patient/p1", headers=bearer(token))
        # Then the read works and both writes are forbidden, leaving the resource as it was
        assert read.status_code == 200
        assert write.status_code == 403
        assert deleted.status_code == 403
    assert _read(secure_client, seeded, auth_keys.hs256([seeded])).get_json()["gender"] == "female"


def test_a_type_scope_gates_other_types(secure_client, auth_keys, seeded):
    # Given a token allowed to read Patients only
    token = auth_keys.hs256([seeded], "system/Patient.r")
    # When it reads a Patient, an Observation, and searches Patients
    patient = _read(secure_client, seeded, token)
    observation = secure_client.get(f"{base(seeded)}/Observation/o1", headers=bearer(token))
    history = secure_client.get(f"{base(seeded)}/Patient/_history", headers=bearer(token))
    # Then only the Patient read is allowed (type history needs the search permission)
    assert patient.status_code == 200
    assert observation.status_code == 403
    assert history.status_code == 403


def test_create_needs_the_create_permission_on_the_type(secure_client, auth_keys, seeded):
    # Given tokens with and without create on Observation
    allowed = auth_keys.hs256([seeded], "system/Observation.c")
    refused = auth_keys.hs256([seeded], "system/Patient.c system/*.rs")
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    # When each creates an Observation
    headers = {"Content-Type": "application/fhir+json"}
    ok = secure_client.post(f"{base(seeded)}/Observation", json=body, headers={**headers, **bearer(allowed)})
    no = secure_client.post(f"{base(seeded)}/Observation", json=body, headers={**headers, **bearer(refused)})
    # Then only the first is stored
    assert ok.status_code == 201
    assert no.status_code == 403
    assert outcome_codes(no) == ["forbidden"]


def test_patch_and_conditional_writes_need_update_or_delete_and_search(secure_client, auth_keys, seeded):
    # Given tokens that may read and search, update without searching, update and search, and delete+search
    reader = auth_keys.hs256([seeded], "system/Patient.rs")
    updater = auth_keys.hs256([seeded], "system/Patient.u")
    searching_updater = auth_keys.hs256([seeded], "system/Patient.us")
    deleter = auth_keys.hs256([seeded], "system/Patient.ds")
    json_patch = {"Content-Type": "application/json-patch+json"}
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    url, by_id = f"{base(seeded)}/Patient?_id=p1", f"{base(seeded)}/Patient/p1"
    # When each patches, conditionally patches, updates and deletes
    refused = [
        secure_client.patch(by_id, json=ops, headers={**json_patch, **bearer(reader)}),
        secure_client.patch(url, json=ops, headers={**json_patch, **bearer(updater)}),
        put(secure_client, url, PATIENT, **bearer(updater)),
        secure_client.delete(url, headers=bearer(searching_updater)),
    ]
    patched = secure_client.patch(by_id, json=ops, headers={**json_patch, **bearer(updater)})
    updated = put(secure_client, url, PATIENT, **bearer(searching_updater))
    deleted = secure_client.delete(url, headers=bearer(deleter))
    # Then only the ones with the needed permissions pass
    assert [r.status_code for r in refused] == [403] * 4
    assert (patched.status_code, updated.status_code, deleted.status_code) == (200, 200, 204)


def test_a_token_without_any_recognised_scope_can_do_nothing(secure_client, auth_keys, seeded):
    # Given a token whose scopes are patient-level or constrained (not supported for backend services)
    token = auth_keys.hs256([seeded], "patient/*.rs system/Observation.rs?category=laboratory openid")
    # When it reads
    response = _read(secure_client, seeded, token)
    # Then it is forbidden
    assert response.status_code == 403


def test_the_capability_statement_is_public(secure_client, partition):
    # Given a server with authentication on
    # When the CapabilityStatement is asked for without a token
    response = secure_client.get(f"{base(partition)}/metadata")
    # Then it is served
    assert response.status_code == 200
    assert response.get_json()["resourceType"] == "CapabilityStatement"


def test_listing_partitions_needs_an_administrator(secure_client, auth_keys, seeded):
    # Given a tenant token and an administrator token
    tenant = auth_keys.hs256([seeded])
    # When each lists the partitions
    refused = secure_client.get("/partitions", headers=bearer(tenant))
    anonymous = secure_client.get("/partitions")
    listed = secure_client.get("/partitions", headers=bearer(auth_keys.admin()))
    # Then only the administrator sees the list
    assert refused.status_code == 403
    assert anonymous.status_code == 401
    assert listed.status_code == 200
    names = [p["part"][0]["valueString"] for p in listed.get_json()["parameter"]]
    assert seeded in names


def test_a_tenant_header_that_disagrees_with_the_url_is_refused(
    secure_client, auth_keys, seeded, other_partition
):
    # Given a token valid in both partitions
    token = auth_keys.hs256([seeded, other_partition])
    # When the URL names one partition and the X-Tenant-ID header the other
    response = secure_client.get(
        f"{base(seeded)}/Patient/p1", headers={**bearer(token), "X-Tenant-ID": other_partition}
    )
    # Then the request is refused with 403 and reveals nothing
    assert response.status_code == 403
    assert outcome_codes(response) == ["forbidden"]
    assert b"female" not in response.data


def test_a_tenant_header_that_agrees_with_the_url_is_accepted(secure_client, auth_keys, seeded):
    # Given a token for the partition
    token = auth_keys.hs256([seeded])
    # When the URL and the header name the same partition
    response = secure_client.get(
        f"{base(seeded)}/Patient/p1", headers={**bearer(token), "X-Tenant-ID": seeded}
    )
    # Then it is served
    assert response.status_code == 200


@pytest.fixture(scope="module")
def header_app(secure_settings, database):  # type: ignore[no-untyped-def]
    """Return an app resolving the tenant of root-base requests from the X-Tenant-ID header."""
    return create_app(replace(secure_settings, tenant_source="header"), database=database)


@pytest.fixture(scope="module")
def token_app(secure_settings, database):  # type: ignore[no-untyped-def]
    """Return an app resolving the tenant of root-base requests from the token's single partition."""
    return create_app(replace(secure_settings, tenant_source="token"), database=database)


def test_with_header_resolution_the_root_base_acts_in_the_header_partition(
    header_app, auth_keys, seeded, other_partition
):
    # Given header resolution and a token for the seeded partition
    client = header_app.test_client()
    token = auth_keys.hs256([seeded])
    # When the root base is used with the header naming the partition, and naming another one
    mine = client.get("/Patient/p1", headers={**bearer(token), "X-Tenant-ID": seeded})
    theirs = client.get("/Patient/p1", headers={**bearer(token), "X-Tenant-ID": other_partition})
    # Then the first reads the partition's patient and the second is refused by the token
    assert mine.status_code == 200
    assert mine.get_json()["id"] == "p1"
    assert theirs.status_code == 403


def test_with_token_resolution_the_root_base_acts_in_the_tokens_partition(
    token_app, auth_keys, seeded, other_partition
):
    # Given token resolution and a token for exactly one partition
    client = token_app.test_client()
    token = auth_keys.hs256([seeded])
    # When the root base is used, with no header, with an agreeing header and with a disagreeing one
    plain = client.get("/Patient/p1", headers=bearer(token))
    agreeing = client.get("/Patient/p1", headers={**bearer(token), "X-Tenant-ID": seeded})
    disagreeing = client.get("/Patient/p1", headers={**bearer(token), "X-Tenant-ID": other_partition})
    # Then the token's partition is used, and the disagreement is refused
    assert plain.status_code == 200
    assert agreeing.status_code == 200
    assert disagreeing.status_code == 403
    assert outcome_codes(disagreeing) == ["forbidden"]


def test_with_url_resolution_a_header_naming_another_partition_than_the_root_is_refused(
    secure_client, auth_keys, seeded
):
    # Given URL resolution (the default) and an administrator token
    # When the root base (partition default) is used with a header naming another partition
    response = secure_client.get("/Patient/p1", headers={**bearer(auth_keys.admin()), "X-Tenant-ID": seeded})
    # Then the sources disagree and the request is refused
    assert response.status_code == 403


def test_an_invalid_tenant_header_is_a_bad_request(secure_client, auth_keys, seeded):
    # Given a header that is not a valid partition name
    # When it is sent
    response = secure_client.get(
        f"{base(seeded)}/Patient/p1", headers={**bearer(auth_keys.admin()), "X-Tenant-ID": "../etc"}
    )
    # Then the answer is 400
    assert response.status_code == 400
    assert outcome_codes(response) == ["invalid"]
