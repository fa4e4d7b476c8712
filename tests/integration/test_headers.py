"""HTTP headers of the FHIR REST API: formats, ETag, Last-Modified, Location and Prefer on every write."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest
from flask.testing import FlaskClient

from tests.support.fhir import FHIR, base, post, put
from tests.support.stored_state import assert_outcome


def test_a_create_answers_with_etag_last_modified_and_an_absolute_location(
    client: FlaskClient, partition: str
) -> None:
    resp = post(client, f"{base(partition)}/Patient", {"resourceType": "Patient"})
    assert resp.status_code == 201
    rid = resp.get_json(force=True)["id"]
    assert resp.headers["ETag"] == 'W/"1"'
    assert parsedate_to_datetime(resp.headers["Last-Modified"]).tzinfo is not None
    assert resp.headers["Location"] == f"http://bulkhead.test/partitions/{partition}/Patient/{rid}/_history/1"
    assert resp.headers["Content-Type"].startswith("application/fhir+json")


@pytest.mark.parametrize("prefer", ["return=minimal", "return=representation", "return=OperationOutcome"])
def test_prefer_shapes_the_body_of_creates_updates_and_deletes_while_headers_stay(
    client: FlaskClient, partition: str, prefer: str
) -> None:
    path = f"{base(partition)}/Patient/pref"
    created = put(client, path, {"resourceType": "Patient", "id": "pref"}, Prefer=prefer)
    updated = put(client, path, {"resourceType": "Patient", "id": "pref", "active": True}, Prefer=prefer)
    deleted = client.delete(path, headers={"Prefer": prefer})
    assert (created.status_code, updated.status_code) == (201, 200)
    assert [created.headers["ETag"], updated.headers["ETag"], deleted.headers["ETag"]] == [
        'W/"1"',
        'W/"2"',
        'W/"3"',
    ]
    for resp in (created, updated, deleted):
        assert "Last-Modified" in resp.headers
    assert created.headers["Location"].endswith("/Patient/pref/_history/1")
    if prefer == "return=minimal":
        assert created.data == updated.data == deleted.data == b""
        assert deleted.status_code == 204
    elif prefer == "return=representation":
        assert updated.get_json(force=True)["active"] is True
        assert created.get_json(force=True)["meta"]["versionId"] == "1"
        assert deleted.status_code == 204
    else:
        for resp in (created, updated, deleted):
            assert resp.get_json(force=True)["resourceType"] == "OperationOutcome"
        assert deleted.status_code == 200


def test_deleting_what_is_not_there_succeeds_without_a_version(client: FlaskClient, partition: str) -> None:
    resp = client.delete(f"{base(partition)}/Patient/never")
    assert resp.status_code == 204
    assert "ETag" not in resp.headers


@pytest.mark.parametrize(
    "content_type",
    [
        "application/fhir+json",
        "application/json",
        "application/json+fhir",
        "application/fhir+json; charset=utf-8",
    ],
)
def test_json_content_types_are_accepted(client: FlaskClient, partition: str, content_type: str) -> None:
    resp = client.post(
        f"{base(partition)}/Patient",
        data=b'{"resourceType":"Patient"}',
        headers={"Content-Type": content_type},
    )
    assert resp.status_code == 201


@pytest.mark.parametrize(
    "query, accept",
    [
        ("", "application/fhir+json"),
        ("", "application/json"),
        ("", "*/*"),
        ("", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("", "application/fhir+json; fhirVersion=4.0"),
        ("?_format=json", ""),
        ("?_format=application/fhir%2Bjson", "application/fhir+xml"),
        ("?_format=application/fhir+json", ""),
        ("?_format=application/json", ""),
    ],
)
def test_json_is_served_when_asked_for_in_any_usual_way(
    client: FlaskClient, partition: str, query: str, accept: str
) -> None:
    put(client, f"{base(partition)}/Patient/fmt", {"resourceType": "Patient", "id": "fmt"})
    headers = {"Accept": accept} if accept else {}
    resp = client.get(f"{base(partition)}/Patient/fmt{query}", headers=headers)
    assert resp.status_code == 200, resp.data
    assert resp.headers["Content-Type"].startswith("application/fhir+json")


@pytest.mark.parametrize(
    "query, accept",
    [
        ("", "application/fhir+xml"),
        ("", "application/xml, text/xml"),
        ("", "text/html"),
        ("?_format=xml", ""),
        ("?_format=application/fhir%2Bxml", ""),
        ("?_format=ttl", "application/fhir+json"),
    ],
)
def test_other_formats_are_refused_with_406(
    client: FlaskClient, partition: str, query: str, accept: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    for path in ("/metadata", "/Patient/x", "/Patient", "/_history"):
        assert_outcome(client.get(f"{base(partition)}{path}{query}", headers=headers), 406, "not-supported")


def test_reads_carry_the_version_headers_of_what_they_return(client: FlaskClient, partition: str) -> None:
    path = f"{base(partition)}/Observation/h1"
    body = {"resourceType": "Observation", "id": "h1", "status": "final", "code": {"text": "x"}}
    put(client, path, body)
    put(client, path, {**body, "status": "amended"})
    current = client.get(path)
    first = client.get(f"{path}/_history/1")
    assert current.headers["ETag"] == 'W/"2"'
    assert first.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in current.headers and "Last-Modified" in first.headers
    assert (
        client.post(
            base(partition), json={"resourceType": "Bundle", "type": "batch"}, headers={"Content-Type": FHIR}
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("name", "value", "status"),
    [
        ("If-Match", 'W/"' + "9" * 5000 + '"', 412),
        ("If-Match", 'W/"2147483648"', 412),
        ("If-Match", 'W/"\u00b2"', 412),
        ("If-Match", "W/", 412),
        ("If-None-Exist", "_count=%C2%B2", 400),
        ("If-None-Exist", "name=a%00", 400),
        ("If-None-Exist", "birthdate=ap9999-12-31", 200),
    ],
)
def test_a_conditional_header_out_of_range_is_a_4xx_outcome_and_stores_nothing(
    client: FlaskClient, partition: str, name: str, value: str, status: int
) -> None:
    # Given a stored patient
    path = f"{base(partition)}/Patient/h"
    put(client, path, {"resourceType": "Patient", "id": "h"})
    # When an update (If-Match) or a conditional create (If-None-Exist) carries a value beyond its range
    body = {"resourceType": "Patient", "id": "h", "active": True}
    target = path if name == "If-Match" else f"{base(partition)}/Patient"
    method = client.put if name == "If-Match" else client.post
    response = method(target, json=body, headers={"Content-Type": FHIR, name: value})
    # Then it is refused with an OperationOutcome (or, for a valid edge date, answered), and nothing changed
    if status >= 400:
        assert_outcome(response, status)
    else:
        assert response.status_code in {200, 201}, response.data
    assert client.get(path).get_json(force=True)["meta"]["versionId"] == "1"
