"""Batch and transaction Bundles posted to a partition's base (``POST [base]``)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from core.settings import Settings
from storage import Database
from tests.support.fhir import FHIR, base, post, put
from tests.support.stored_state import assert_outcome, stored_state

PATIENT_URN = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
OBSERVATION_URN = "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    """Return a Bundle of ``kind`` holding ``entries``."""
    out: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if entries:
        out["entry"] = list(entries)
    return out


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Return one Bundle entry; ``full_url`` and request fields (ifMatch ...) go in ``extra``."""
    item: dict[str, Any] = {"request": {"method": method, "url": url}}
    if "full_url" in extra:
        item["fullUrl"] = extra.pop("full_url")
    item["request"].update(extra)
    if resource is not None:
        item["resource"] = resource
    return item


def observation(subject: str | None = None, **fields: Any) -> dict[str, Any]:
    """Return a small valid Observation."""
    obs: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}
    if subject is not None:
        obs["subject"] = {"reference": subject}
    obs.update(fields)
    return obs


def root(partition: str | None) -> str:
    """Return the path a Bundle is posted to for ``partition``."""
    return base(partition) or "/"


def test_a_transaction_creates_every_entry_and_resolves_urn_uuid_references(
    client: FlaskClient, partition: str
) -> None:
    # Given a patient and an observation that refers to it by its urn:uuid fullUrl
    tx = bundle(
        entry("POST", "Observation", observation(PATIENT_URN), full_url=OBSERVATION_URN),
        entry("POST", "Patient", {"resourceType": "Patient", "active": True}, full_url=PATIENT_URN),
    )
    # When the transaction is posted
    resp = post(client, root(partition), tx)
    # Then both are created, in request order, and the reference names the patient's new id
    assert resp.status_code == 200, resp.data
    body = resp.get_json(force=True)
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    obs_entry, patient_entry = body["entry"]
    assert patient_entry["response"]["status"] == "201 Created"
    assert patient_entry["response"]["etag"] == 'W/"1"'
    assert patient_entry["response"]["lastModified"]
    patient_id = patient_entry["resource"]["id"]
    assert patient_entry["response"]["location"].endswith(
        f"/partitions/{partition}/Patient/{patient_id}/_history/1"
    )
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    stored = client.get(f"{base(partition)}/Observation/{obs_entry['resource']['id']}").get_json(force=True)
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert client.get(f"{base(partition)}/Patient/{patient_id}").status_code == 200


def test_a_transaction_keeps_the_clients_decimal_precision_while_rewriting_references(
    client: FlaskClient, partition: str
) -> None:
    # Given raw JSON with decimals whose spelling a parse/serialise round trip would lose
    raw = (
        '{"resourceType":"Bundle","type":"transaction","entry":['
        '{"fullUrl":"' + PATIENT_URN + '","resource":{"resourceType":"Patient","active":true},'
        '"request":{"method":"POST","url":"Patient"}},'
        '{"resource":{"resourceType":"Observation","status":"final","code":{"text":"w"},'
        '"subject":{"reference":"' + PATIENT_URN + '"},'
        '"valueQuantity":{"value":72.50,"unit":"kg"},"note":[{"text":"1.10 \\u00e9"}]},'
        '"request":{"method":"PUT","url":"Observation/w1"}}]}'
    )
    raw = raw.replace(
        '"resource":{"resourceType":"Observation",', '"resource":{"resourceType":"Observation","id":"w1",'
    )
    # When it is posted as a transaction
    resp = client.post(root(partition), data=raw.encode(), headers={"Content-Type": FHIR})
    # Then the stored observation has the client's 72.50 and the patient's resolved id
    assert resp.status_code == 200, resp.data
    stored = client.get(f"{base(partition)}/Observation/w1")
    assert b'"value":72.50' in stored.data
    patient_id = resp.get_json(force=True)["entry"][0]["resource"]["id"]
    assert stored.get_json(force=True)["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored.get_json(force=True)["note"][0]["text"] == "1.10 \u00e9"


def test_an_invalid_entry_rolls_back_the_whole_transaction_and_names_the_entry(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given a partition with one patient, and a transaction whose second entry is invalid
    put(client, f"{base(partition)}/Patient/keep", {"resourceType": "Patient", "id": "keep"})
    before = stored_state(client, partition, other_partition)
    tx = bundle(
        entry("PUT", "Patient/keep", {"resourceType": "Patient", "id": "keep", "active": False}),
        entry("POST", "Patient", {"resourceType": "Patient", "gender": "robot"}),
    )
    # When it is posted
    resp = post(client, root(partition), tx)
    # Then it fails with the entry's status, names the entry and the element, and nothing changed
    body = assert_outcome(resp, 422, "code-invalid")
    assert body["issue"][0]["expression"] == ["Bundle.entry[1].resource.gender"]
    assert "Bundle.entry[1]" in body["issue"][0]["diagnostics"]
    assert stored_state(client, partition, other_partition) == before
    assert "active" not in client.get(f"{base(partition)}/Patient/keep").get_json(force=True)


def test_a_failed_transaction_in_a_new_partition_does_not_create_the_partition(
    client: FlaskClient, partition: str
) -> None:
    before = stored_state(client)
    tx = bundle(
        entry("POST", "Patient", {"resourceType": "Patient"}),
        entry("PUT", "Patient/x", {"resourceType": "Patient", "id": "y"}),
    )
    assert_outcome(post(client, root(partition), tx), 400)
    assert stored_state(client) == before
    assert partition not in [name for name, _ in stored_state(client).partitions]


def test_entries_run_in_the_fhir_order_and_answer_in_request_order(
    client: FlaskClient, partition: str
) -> None:
    # Given an existing patient
    put(client, f"{base(partition)}/Patient/p1", {"resourceType": "Patient", "id": "p1", "active": True})
    put(client, f"{base(partition)}/Patient/old", {"resourceType": "Patient", "id": "old"})
    # When one transaction lists GET first, then PUT, then DELETE
    tx = bundle(
        entry("GET", "Patient/p1"),
        entry("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p1", "active": False}),
        entry("DELETE", "Patient/old"),
    )
    resp = post(client, root(partition), tx)
    # Then the GET (run last) sees the update, and the answers follow the request's order
    assert resp.status_code == 200, resp.data
    got, updated, deleted = resp.get_json(force=True)["entry"]
    assert got["response"]["status"] == "200 OK"
    assert got["resource"]["active"] is False
    assert got["resource"]["meta"]["versionId"] == "2"
    assert updated["response"]["status"] == "200 OK"
    assert deleted["response"]["status"] == "204 No Content"
    assert client.get(f"{base(partition)}/Patient/old").status_code == 410


def test_a_stale_if_match_in_an_entry_fails_the_transaction_with_412(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Patient/p1"
    put(client, path, {"resourceType": "Patient", "id": "p1", "active": True})
    put(client, path, {"resourceType": "Patient", "id": "p1", "active": False})
    before = stored_state(client, partition)
    tx = bundle(
        entry("POST", "Patient", {"resourceType": "Patient"}),
        entry("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p1"}, ifMatch='W/"1"'),
    )
    assert_outcome(post(client, root(partition), tx), 412, "conflict")
    assert stored_state(client, partition) == before
    fresh = bundle(entry("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p1"}, ifMatch='W/"2"'))
    assert post(client, root(partition), fresh).status_code == 200


def test_prefer_return_minimal_leaves_resources_out_and_operation_outcome_adds_outcomes(
    client: FlaskClient, partition: str
) -> None:
    tx = bundle(entry("POST", "Patient", {"resourceType": "Patient"}))
    minimal = post(client, root(partition), tx, Prefer="return=minimal").get_json(force=True)
    assert "resource" not in minimal["entry"][0]
    assert minimal["entry"][0]["response"]["location"]
    outcome = post(client, root(partition), tx, Prefer="return=OperationOutcome").get_json(force=True)
    assert "resource" not in outcome["entry"][0]
    assert outcome["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_a_batch_runs_entries_independently_and_reports_each_failure(
    client: FlaskClient, partition: str
) -> None:
    # Given a batch with a good create, an invalid one, a read of nothing, and an update
    batch = bundle(
        entry("POST", "Patient", {"resourceType": "Patient", "active": True}),
        entry("POST", "Patient", {"resourceType": "Patient", "active": "yes"}),
        entry("GET", "Patient/missing"),
        entry("PUT", "Patient/b1", {"resourceType": "Patient", "id": "b1"}),
        kind="batch",
    )
    # When it is posted
    resp = post(client, root(partition), batch)
    # Then the good entries are stored and each failure is reported in its own entry
    assert resp.status_code == 200, resp.data
    body = resp.get_json(force=True)
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "404 Not Found", "201 Created"]
    invalid = body["entry"][1]["response"]["outcome"]
    assert invalid["issue"][0]["expression"] == ["Bundle.entry[1].resource.active"]
    assert body["entry"][2]["response"]["outcome"]["issue"][0]["code"] == "not-found"
    assert client.get(f"{base(partition)}/Patient/b1").status_code == 200
    assert stored_state(client, partition).history_totals == (2,)


def test_a_batch_does_not_resolve_references_between_its_entries(client: FlaskClient, partition: str) -> None:
    batch = bundle(
        entry("POST", "Patient", {"resourceType": "Patient"}, full_url=PATIENT_URN),
        entry("POST", "Observation", observation(PATIENT_URN)),
        kind="batch",
    )
    body = post(client, root(partition), batch).get_json(force=True)
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "400 Bad Request"]
    assert PATIENT_URN in body["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]


def test_an_unresolved_urn_uuid_reference_fails_the_transaction(client: FlaskClient, partition: str) -> None:
    before = stored_state(client, partition)
    tx = bundle(entry("POST", "Observation", observation("urn:uuid:0f5a1f3e-0000-4000-8000-000000000000")))
    assert_outcome(post(client, root(partition), tx), 400)
    assert stored_state(client, partition) == before


def test_more_entries_than_the_limit_are_refused_with_413_and_nothing_is_stored(
    settings: Settings, database: Database, partition: str
) -> None:
    # Given a server that accepts at most three entries per Bundle
    small = create_app(replace(settings, max_transaction_entries=3), database=database).test_client()
    before = stored_state(small, partition)
    tx = bundle(*[entry("POST", "Patient", {"resourceType": "Patient"}) for _ in range(4)])
    # When four are posted, Then 413 and nothing is stored; three pass
    assert_outcome(post(small, root(partition), tx), 413, "too-costly")
    assert stored_state(small, partition) == before
    assert post(small, root(partition), bundle(*tx["entry"][:3])).status_code == 200


def test_the_same_resource_twice_in_one_transaction_is_refused(client: FlaskClient, partition: str) -> None:
    tx = bundle(
        entry("PUT", "Patient/d1", {"resourceType": "Patient", "id": "d1"}),
        entry("DELETE", "Patient/d1"),
    )
    body = assert_outcome(post(client, root(partition), tx), 400)
    assert "once" in body["issue"][0]["diagnostics"]
    assert client.get(f"{base(partition)}/Patient/d1").status_code == 404


def test_absolute_urls_of_this_partition_are_accepted_and_other_servers_are_refused(
    client: FlaskClient, partition: str
) -> None:
    own = f"http://bulkhead.test/partitions/{partition}/Patient/abs1"
    tx = bundle(entry("PUT", own, {"resourceType": "Patient", "id": "abs1"}, full_url=own))
    assert post(client, root(partition), tx).status_code == 200
    assert client.get(f"{base(partition)}/Patient/abs1").status_code == 200
    foreign = bundle(
        entry("PUT", "http://elsewhere.example/fhir/Patient/x", {"resourceType": "Patient", "id": "x"})
    )
    assert_outcome(post(client, root(partition), foreign), 400)


def test_a_bundle_that_is_not_a_batch_or_transaction_is_refused(client: FlaskClient, partition: str) -> None:
    before = stored_state(client, partition)
    assert_outcome(post(client, root(partition), bundle(kind="collection")), 400)
    assert_outcome(post(client, root(partition), {"resourceType": "Patient"}), 400)
    assert_outcome(post(client, root(partition), bundle(entry("POST", "Patient"))), 400)
    assert_outcome(
        post(client, root(partition), bundle(entry("POST", "Nope", {"resourceType": "Nope"}))), 404
    )
    assert_outcome(post(client, root(partition), bundle({"request": {"method": "FETCH", "url": "x"}})), 400)
    assert stored_state(client, partition) == before


def test_an_empty_transaction_succeeds_with_an_empty_response(client: FlaskClient, partition: str) -> None:
    resp = post(client, root(partition), bundle())
    assert resp.status_code == 200
    assert resp.get_json(force=True)["type"] == "transaction-response"
    assert "entry" not in resp.get_json(force=True)
    empty_array = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    assert_outcome(post(client, root(partition), empty_array), 400)


def test_a_transaction_at_the_root_writes_to_the_default_partition(client: FlaskClient) -> None:
    tx = bundle(entry("PUT", "Patient/tx-root-check", {"resourceType": "Patient", "id": "tx-root-check"}))
    assert post(client, "/", tx).status_code == 200
    assert client.get("/partitions/default/Patient/tx-root-check").status_code == 200


def test_a_transaction_body_in_xml_or_without_a_json_content_type_is_refused(
    client: FlaskClient, partition: str
) -> None:
    xml = client.post(root(partition), data=b"<Bundle/>", headers={"Content-Type": "application/fhir+xml"})
    assert_outcome(xml, 415)
    broken = client.post(root(partition), data=b'{"resourceType": "Bundle",', headers={"Content-Type": FHIR})
    assert_outcome(broken, 400)


def test_a_conditional_create_entry_reuses_a_match_and_references_follow_it(
    client: FlaskClient, partition: str
) -> None:
    # Given a patient with an identifier
    known = {"resourceType": "Patient", "id": "known", "identifier": [{"system": "urn:ids", "value": "42"}]}
    put(client, f"{base(partition)}/Patient/known", known)
    # When a transaction conditionally creates that patient and an observation that refers to it
    tx = bundle(
        entry(
            "POST",
            "Patient",
            {"resourceType": "Patient", "identifier": [{"system": "urn:ids", "value": "42"}]},
            full_url=PATIENT_URN,
            ifNoneExist="identifier=urn:ids|42",
        ),
        entry("POST", "Observation", observation(PATIENT_URN)),
    )
    resp = post(client, root(partition), tx)
    # Then the existing patient is used (200) and the observation names it
    assert resp.status_code == 200, resp.data
    patient_entry, obs_entry = resp.get_json(force=True)["entry"]
    assert patient_entry["response"]["status"] == "200 OK"
    assert patient_entry["resource"]["id"] == "known"
    assert obs_entry["resource"]["subject"]["reference"] == "Patient/known"
    assert stored_state(client, partition).history_totals == (2,)
    # And criteria that match nothing create
    tx["entry"][0]["request"]["ifNoneExist"] = "identifier=urn:ids|43"
    created = post(client, root(partition), tx).get_json(force=True)["entry"][0]
    assert created["response"]["status"] == "201 Created"


def test_a_conditional_create_entry_matching_several_resources_fails_with_412(
    client: FlaskClient, partition: str
) -> None:
    for rid in ("twin1", "twin2"):
        put(
            client,
            f"{base(partition)}/Patient/{rid}",
            {"resourceType": "Patient", "id": rid, "gender": "other"},
        )
    before = stored_state(client, partition)
    tx = bundle(entry("POST", "Patient", {"resourceType": "Patient"}, ifNoneExist="gender=other"))
    assert_outcome(post(client, root(partition), tx), 412)
    assert stored_state(client, partition) == before


def test_search_entries_answer_with_a_searchset_that_sees_the_transactions_own_writes(
    client: FlaskClient, partition: str
) -> None:
    # Given a transaction that creates two patients and then searches for them
    tx = bundle(
        entry("GET", "Patient?gender=female"),
        entry("PUT", "Patient/s1", {"resourceType": "Patient", "id": "s1", "gender": "female"}),
        entry("PUT", "Patient/s2", {"resourceType": "Patient", "id": "s2", "gender": "male"}),
    )
    resp = post(client, root(partition), tx)
    # Then the search (run after the writes) finds the new female patient only
    assert resp.status_code == 200, resp.data
    found = resp.get_json(force=True)["entry"][0]
    assert found["response"]["status"] == "200 OK"
    assert found["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == ["s1"]
    # And a search with an unknown parameter is that entry's 400 in a batch
    batch = bundle(entry("GET", "Patient?nonsense=1"), kind="batch")
    answer = post(client, root(partition), batch).get_json(force=True)["entry"][0]
    assert answer["response"]["status"].startswith("400")


def test_transactions_updating_the_same_resources_in_opposite_orders_all_succeed(
    app: Flask, client: FlaskClient, partition: str
) -> None:
    # Given two patients, and transactions that update them in one order and in the other
    for rid in ("a", "b"):
        put(client, f"{base(partition)}/Patient/{rid}", {"resourceType": "Patient", "id": rid})

    def updates(order: tuple[str, str], n: int) -> dict[str, Any]:
        gender = "male" if order[0] == "a" else "female"
        return bundle(
            *[
                entry(
                    "PUT",
                    f"Patient/{rid}",
                    # Each transaction's content its own (an identical update would store no version).
                    {"resourceType": "Patient", "id": rid, "birthDate": f"19{n:02d}", "gender": gender},
                )
                for rid in order
            ]
        )

    rounds = 8
    barrier = threading.Barrier(2)

    def run(order: tuple[str, str]) -> list[int]:
        own = app.test_client()
        statuses = []
        for n in range(rounds):
            barrier.wait()
            statuses.append(post(own, root(partition), updates(order, n)).status_code)
        return statuses

    # When they run at the same time, round after round
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [("a", "b"), ("b", "a")]))
    # Then none deadlocks or fails: each waits for the other, and every update is a version
    assert results == [[200] * rounds, [200] * rounds]
    for rid in ("a", "b"):
        assert client.get(f"{base(partition)}/Patient/{rid}").get_json(force=True)["meta"][
            "versionId"
        ] == str(1 + 2 * rounds)


def test_transactions_creating_the_same_new_ids_in_opposite_orders_answer_200_or_409(
    app: Flask, client: FlaskClient, partition: str
) -> None:
    rounds = 8
    barrier = threading.Barrier(2)

    def run(order: tuple[str, str]) -> list[int]:
        own = app.test_client()
        statuses = []
        for n in range(rounds):
            tx = bundle(
                *[
                    entry("PUT", f"Patient/{r}{n}", {"resourceType": "Patient", "id": f"{r}{n}"})
                    for r in order
                ]
            )
            barrier.wait()
            statuses.append(post(own, root(partition), tx).status_code)
        return statuses

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(run, [("x", "y"), ("y", "x")])
    for n in range(rounds):
        # Each round: both succeeded one after the other, or one lost with 409; never a deadlock or a 500
        assert sorted([first[n], second[n]]) in ([200, 200], [200, 409]), (first, second)
        history = client.get(f"{base(partition)}/Patient/x{n}/_history").get_json(force=True)
        assert history["total"] == [first[n], second[n]].count(200)


BIG = "9" * 5000


def test_versions_and_etags_no_version_column_can_hold_are_404_and_412_inside_batches_and_transactions(
    client: FlaskClient, partition: str
) -> None:
    # Given a patient with one version
    put(client, f"{base(partition)}/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    before = stored_state(client, partition)
    patient = {"resourceType": "Patient", "id": "p1", "active": True}
    cases = [
        (entry("GET", "Patient/p1/_history/\u00b2"), "404"),
        (entry("GET", "Patient/p1/_history/2147483648"), "404"),
        (entry("GET", f"Patient/p1/_history/{BIG}"), "404"),
        (entry("PUT", "Patient/p1", patient, ifMatch=f'W/"{BIG}"'), "412"),
        (entry("DELETE", "Patient/p1", ifMatch='W/"2147483648"'), "412"),
    ]
    for item, status in cases:
        # When a batch carries the entry, Then the entry answers 404 / 412 and the batch is a 200
        answer = post(client, root(partition), bundle(item, kind="batch"))
        assert answer.status_code == 200, answer.data[:500]
        assert answer.get_json(force=True)["entry"][0]["response"]["status"].startswith(status)
        # And a transaction carrying it fails as a whole with that status and an OperationOutcome
        assert_outcome(post(client, root(partition), bundle(item)), int(status))
    # And an If-None-Match of 5,000 digits names no version, so the read answers 200
    read = post(client, root(partition), bundle(entry("GET", "Patient/p1", ifNoneMatch=f'W/"{BIG}"')))
    assert read.status_code == 200 and read.get_json(force=True)["entry"][0]["response"]["status"].startswith(
        "200"
    )
    assert stored_state(client, partition) == before


def test_a_transaction_rewrites_placeholders_in_uri_elements_and_narrative_but_not_in_identifiers(
    client: FlaskClient, partition: str
) -> None:
    placeholder = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": placeholder},
        "content": [{"attachment": {"contentType": "text/plain", "url": placeholder}}],
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{placeholder}">the text</a></div>',
        },
    }
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="}
    sent = bundle(
        entry(
            "POST", "DocumentReference", document, full_url="urn:uuid:9b3c1c1e-0d7e-4f57-9d0c-1b0f9f6c2a11"
        ),
        entry("POST", "Binary", binary, full_url=placeholder),
    )
    answer = post(client, root(partition), sent)
    assert answer.status_code == 200, answer.data[:500]
    entries = answer.get_json(force=True)["entry"]
    binary_id = entries[1]["response"]["location"].split("/")[-3]
    stored = client.get(entries[0]["response"]["location"].split("/_history/")[0]).get_json(force=True)
    assert stored["content"][0]["attachment"]["url"] == f"Binary/{binary_id}"
    assert f'href="Binary/{binary_id}"' in stored["text"]["div"]
    # An identifier that happens to spell the placeholder is the document's id, not a link.
    assert stored["masterIdentifier"]["value"] == placeholder
