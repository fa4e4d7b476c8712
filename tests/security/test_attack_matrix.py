"""The attack matrix: with authentication on, partition B's token against everything of partition A.

Partitions A (the victim) and B (the attacker) hold resources with identical ids. Every case checks the
status, that the body is an OperationOutcome (for refusals), that nothing of A appears in the answer, and,
at the end of each test, that A's stored rows are exactly as before.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from harness.tokens import BAD_TOKENS, bearer
from tests.support.arena import SECRET, check_no_secret, check_refused
from tests.support.fhir import FHIR, base

PATIENT_BODY = {"resourceType": "Patient", "id": "same", "gender": "male"}
OBS_BODY = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}

SEARCHES = [
    "Patient?name=SECRET",
    "Patient?family:exact=SECRET-OF-A",
    "Patient?name:contains=SECRET",
    "Patient?identifier=urn:test|id-SECRET-OF-A",
    "Patient?identifier:not=x",
    "Patient?gender:missing=false",
    "Patient?birthdate=ge1900-01-01",
    "Patient?birthdate=sa1900&birthdate=eb2100",
    "Patient?_id=same",
    "Patient?_lastUpdated=gt2000-01-01",
    "Observation?subject=Patient/same",
    "Observation?subject:Patient.name=SECRET",
    "Observation?value-quantity=gt1|http://unitsofmeasure.org|/min",
    "Observation?code=http://loinc.org|8867-4",
    "Observation?_include=Observation:subject",
    "Patient?_revinclude=Observation:subject",
    "Patient?_has:Observation:subject:code=8867-4",
    "Patient?_sort=-birthdate&_count=1&_total=accurate",
    "Observation?_id=obs&_include=Observation:subject:Patient",
]


def _a_requests(victim: str) -> list[tuple[str, str, Any, dict[str, str]]]:
    b = base(victim)
    return [
        ("GET", f"{b}/Patient/same", None, {}),
        ("GET", f"{b}/Patient/same/_history/1", None, {}),
        ("GET", f"{b}/Patient/same/_history", None, {}),
        ("GET", f"{b}/Patient/_history", None, {}),
        ("GET", f"{b}/_history", None, {}),
        ("PUT", f"{b}/Patient/same", PATIENT_BODY, {}),
        ("PUT", f"{b}/Patient/same", PATIENT_BODY, {"If-Match": 'W/"2"'}),
        ("DELETE", f"{b}/Patient/same", None, {}),
        ("POST", f"{b}/Observation", OBS_BODY, {}),
        ("POST", f"{b}/Patient", PATIENT_BODY, {"If-None-Exist": "identifier=urn:test|id-SECRET-OF-A"}),
        ("PUT", f"{b}/Patient?identifier=urn:test|id-SECRET-OF-A", PATIENT_BODY, {}),
        ("DELETE", f"{b}/Patient?identifier=urn:test|id-SECRET-OF-A", None, {}),
        ("PATCH", f"{b}/Patient/same", {"resourceType": "Parameters"}, {}),
        ("PATCH", f"{b}/Patient?identifier=urn:test|id-SECRET-OF-A", {"resourceType": "Parameters"}, {}),
        ("POST", f"{b}/", {"resourceType": "Bundle", "type": "batch", "entry": []}, {}),
        ("GET", f"{b}/$export", None, {"Prefer": "respond-async"}),
        ("GET", f"{b}/Patient/$export", None, {"Prefer": "respond-async"}),
        ("GET", f"{b}/_operations", None, {}),
        ("GET", f"{b}/_operations/export/{secrets.token_hex(16)}", None, {}),
        ("POST", f"{b}/$import", {"resourceType": "Parameters"}, {}),
        ("POST", f"{b}/$reindex", {"resourceType": "Parameters"}, {}),
        ("PATCH", f"{b}/Patient/$bulk-update?gender=female", {"resourceType": "Parameters"}, {}),
        ("PATCH", f"{b}/$bulk-update", {"resourceType": "Parameters"}, {}),
        ("DELETE", f"{b}/Patient/$bulk-delete?gender=female", None, {}),
        ("DELETE", f"{b}/$bulk-delete", None, {}),
        ("GET", f"{b}/_operations/import/{secrets.token_hex(16)}", None, {}),
        *[("GET", f"{b}/{query}", None, {}) for query in SEARCHES],
        *[("POST", f"{b}/{query.split('?')[0]}/_search", None, {}) for query in SEARCHES[:3]],
    ]


def test_every_interaction_on_partition_a_with_bs_token_is_forbidden_and_reveals_nothing(
    secure_client, arena
):
    # Given B's token with every scope, and A's resources with the same ids as B's
    for method, path, body, headers in _a_requests(arena.victim):
        # When B's token is used on A's base
        kwargs: dict[str, Any] = {"headers": {**bearer(arena.token), **headers}}
        if body is not None:
            kwargs["json"] = body
            kwargs["headers"]["Content-Type"] = FHIR
        response = secure_client.open(path, method=method, **kwargs)
        # Then each is 403 with an OperationOutcome and nothing of A (and A is unchanged, see the fixture)
        check_refused(response, 403)


def test_a_tenant_token_cannot_start_work_over_every_partition(secure_client, arena):
    # Given B's token with every scope
    headers = {**bearer(arena.token), "Content-Type": FHIR}
    # When it asks for a reindex of every partition, the partition list, the audit trail and the metrics
    responses = [
        secure_client.post("/_reindex", json={"resourceType": "Parameters"}, headers=headers),
        secure_client.get("/partitions", headers=headers),
        secure_client.get(f"/_audit?partition={arena.victim}", headers=headers),
        secure_client.get(f"/_partition-config/{arena.victim}", headers=headers),
        secure_client.get("/metrics", headers=headers),
    ]
    # Then each is an administrator's: 403, revealing nothing of A
    for response in responses:
        check_refused(response, 403)
        assert arena.victim.encode() not in response.data


def test_bs_own_base_never_serves_as_resources_with_the_same_ids(secure_client, arena):
    # Given identical ids in A and B
    b = base(arena.attacker)
    auth = bearer(arena.token)
    # When B reads, vreads and lists history of those ids in its own partition
    paths = [
        f"{b}/Patient/same",
        f"{b}/Patient/same/_history/1",
        f"{b}/Patient/same/_history/2",
        f"{b}/Patient/same/_history",
        f"{b}/Patient/_history",
        f"{b}/_history",
        f"{b}/Observation/obs",
    ]
    responses = [secure_client.get(path, headers=auth) for path in paths]
    # Then it gets its own versions only
    for response in responses:
        assert response.status_code == 200, response.data[:200]
        check_no_secret(response)
    assert responses[0].get_json()["name"][0]["family"] == "attacker"
    assert responses[3].get_json()["total"] == 2


def test_searches_in_b_with_every_parameter_type_and_modifier_never_return_as_resources(secure_client, arena):
    # Given identical ids in A and B, A's resources carrying a secret
    b = base(arena.attacker)
    # When B searches its own base with every kind of parameter, modifier, include and chain
    for query in SEARCHES:
        response = secure_client.get(f"{b}/{query}", headers=bearer(arena.token))
        # Then no answer holds anything of A, and none is a 5xx
        check_no_secret(response, echo=query.split("?", 1)[1])
        body = response.get_json(force=True, silent=True) or {}
        if body.get("resourceType") == "Bundle":
            assert all(
                SECRET not in orjson.dumps(e.get("resource", {})).decode() for e in body.get("entry", [])
            ), query
    # And the same ids find B's own resources, once each
    own = secure_client.get(f"{b}/Patient?_id=same", headers=bearer(arena.token)).get_json()
    assert own["resourceType"] == "Bundle"
    assert [e["resource"]["name"][0]["family"] for e in own["entry"]] == ["attacker"]
    included = secure_client.get(
        f"{b}/Observation?_id=obs&_include=Observation:subject", headers=bearer(arena.token)
    ).get_json()
    assert sorted(e["resource"]["resourceType"] for e in included["entry"]) == ["Observation", "Patient"]


INJECTIONS = [
    "' OR '1'='1",
    "x'; DROP TABLE resource; --",
    "x' UNION SELECT raw FROM resource --",
    "%' OR partition_id <> 0 --",
    "\\' OR 1=1 --",
    "x\x00y",
    "$(Patient.name)",
    "Patient.name.where(true)",
    "%25%27%20OR%201%3D1",
    "') or resource_id like ('%",
    "*",
    "%",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_strings_in_search_values_are_inert(secure_client, arena, value):
    # Given B's token on B's base
    b = base(arena.attacker)
    encoded = quote(value, safe="")
    # When SQL or FHIRPath fragments are sent as search values of each parameter type
    for param in ("name", "identifier", "birthdate", "_id", "general-practitioner", "_lastUpdated", "_sort"):
        response = secure_client.get(f"{b}/Patient?{param}={encoded}", headers=bearer(arena.token))
        # Then nothing of A appears, nothing breaks, and A's rows are untouched (fixture)
        check_no_secret(response, echo=value)
    response = secure_client.get(f"{b}/Patient/{encoded}", headers=bearer(arena.token))
    check_no_secret(response, echo=value)


def test_writes_in_b_cannot_reach_a_by_conditional_match_or_reference(secure_client, arena):
    # Given B's token on B's base
    b = base(arena.attacker)
    headers = {**bearer(arena.token), "Content-Type": FHIR}
    # When B conditionally creates on A's identifier, and stores references to A's resources
    conditional = secure_client.post(
        f"{b}/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "id-SECRET-OF-A"}]},
        headers={**headers, "If-None-Exist": "identifier=urn:test|id-SECRET-OF-A"},
    )
    absolute = secure_client.post(
        f"{b}/Observation",
        json={
            **OBS_BODY,
            "subject": {"reference": f"http://bulkhead.test/partitions/{arena.victim}/Patient/same"},
        },
        headers=headers,
    )
    # Then the conditional create found nothing of A: it created a new resource in B (not A's "same", whose
    # name it would carry), and nothing answered with A's data
    assert conditional.status_code == 201, conditional.data[:200]
    created = conditional.get_json()
    assert created["id"] != "same" and "name" not in created
    check_no_secret(absolute)
    # And conditional update and delete on A's identifier, run in B, touch nothing of A (see the fixture)
    criteria = "identifier=urn:test|id-SECRET-OF-A"
    update = secure_client.put(f"{b}/Patient?{criteria}", json={"resourceType": "Patient"}, headers=headers)
    delete = secure_client.delete(f"{b}/Patient?{criteria}", headers=bearer(arena.token))
    for response in (update, delete):
        check_no_secret(response, echo=criteria)


def test_transactions_in_b_cannot_read_or_write_as_resources(secure_client, arena):
    # Given a transaction and a batch in B whose entries aim at A's absolute URLs
    b = base(arena.attacker)
    a_url = f"http://bulkhead.test/partitions/{arena.victim}"
    headers = {**bearer(arena.token), "Content-Type": FHIR}
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "PUT", "url": f"{a_url}/Patient/same"}, "resource": PATIENT_BODY},
            {"request": {"method": "DELETE", "url": f"{a_url}/Observation/obs"}},
        ],
    }
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"{a_url}/Patient/same"}},
            {"request": {"method": "GET", "url": f"{a_url}/Patient?name=SECRET"}},
            {"request": {"method": "GET", "url": "Patient/same"}},
        ],
    }
    # When B posts both to its own base
    responses = [secure_client.post(f"{b}/", json=body, headers=headers) for body in (transaction, batch)]
    # Then nothing of A is read or changed (A's rows are compared by the fixture)
    for response in responses:
        check_no_secret(response)
    assert responses[0].status_code >= 400


@pytest.mark.parametrize(
    "path",
    [
        "/partitions/../Patient/same",
        "/partitions/%2E%2E/Patient/same",
        "/partitions/{victim}%2F..%2F{attacker}/Patient/same",
        "/partitions/{attacker}/..%2F{victim}/Patient/same",
        "/partitions/{attacker}%2F../{victim}/Patient/same",
        "/partitions/{victim_lookalike}/Patient/same",
        "/partitions/%EF%BC%A1/Patient/same",
        "/partitions/{victim}%00/Patient/same",
        "/partitions/ADMIN/Patient/same",
        "/partitions/System/Patient/same",
        "/partitions/" + "a" * 65 + "/Patient/same",
        "/partitions//Patient/same",
    ],
)
def test_hostile_partition_names_never_reach_a(secure_client, arena, path):
    # Given partition names with dot segments, encoded slashes, look-alike letters, NUL and reserved words
    lookalike = arena.victim.replace("t", "\u0442").replace("o", "\u043e")  # Cyrillic te / o
    target = path.format(victim=arena.victim, attacker=arena.attacker, victim_lookalike=quote(lookalike))
    # When B's token uses them
    response = secure_client.get(target, headers=bearer(arena.token))
    # Then the request is refused (bad name, not found or forbidden) and nothing of A is revealed
    check_refused(response, {400, 403, 404})


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_on_as_resources_reveal_nothing(secure_client, auth_keys, arena, case):
    # Given a token for A that is expired, unsigned, wrongly signed, confused, oversized or malformed
    token = BAD_TOKENS[case](auth_keys, arena.victim)
    # When it reads and writes in A
    read = secure_client.get(f"{base(arena.victim)}/Patient/same", headers=bearer(token))
    write = secure_client.put(
        f"{base(arena.victim)}/Patient/same",
        json=PATIENT_BODY,
        headers={**bearer(token), "Content-Type": FHIR},
    )
    # Then both are 401 with an OperationOutcome and reveal or change nothing
    check_refused(read, 401)
    check_refused(write, 401)


def test_a_token_for_a_used_with_bs_tenant_header_is_refused(secure_client, auth_keys, arena):
    # Given A's own token
    token = auth_keys.hs256([arena.victim])
    # When it addresses A's URL with B's tenant header, and B's URL with A's header
    mixed = secure_client.get(
        f"{base(arena.victim)}/Patient/same", headers={**bearer(token), "X-Tenant-ID": arena.attacker}
    )
    other = secure_client.get(
        f"{base(arena.attacker)}/Patient/same", headers={**bearer(token), "X-Tenant-ID": arena.victim}
    )
    # Then both are refused, revealing nothing
    check_refused(mixed, 403)
    check_refused(other, 403)
