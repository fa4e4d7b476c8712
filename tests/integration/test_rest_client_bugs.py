"""What real FHIR clients ran into: decimals, FHIR versions, ignored query strings, history, no-op updates."""

from __future__ import annotations

from dataclasses import replace

from flask.testing import FlaskClient

from api import create_app
from core.settings import Settings
from storage import Database
from tests.support.fhir import FHIR, base, outcome_codes, post, put

_OBSERVATION = (
    b'{"resourceType":"Observation","id":"dec","status":"final","code":{"text":"weight"},'
    b'"valueQuantity":{"value":66.899999999999991,"unit":"kg"}}'
)


def test_a_decimal_with_more_digits_than_a_double_reads_back_exactly_as_sent(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Observation/dec"
    stored = client.put(path, data=_OBSERVATION, headers={"Content-Type": FHIR})
    assert stored.status_code == 201
    read = client.get(path)
    assert b"66.899999999999991" in read.data
    assert b"66.89999999999999," not in read.data


def test_a_body_that_names_another_fhir_version_is_refused_with_415_and_nothing_is_stored(
    client: FlaskClient, partition: str
) -> None:
    for version in ("3.0", "5.0"):
        sent = client.post(
            f"{base(partition)}/Patient",
            json={"resourceType": "Patient", "active": True},
            headers={"Content-Type": f"application/fhir+json; fhirVersion={version}"},
        )
        assert sent.status_code == 415, version
        assert outcome_codes(sent) == ["not-supported"]
    r4 = client.post(
        f"{base(partition)}/Patient",
        json={"resourceType": "Patient", "active": True},
        headers={"Content-Type": "application/fhir+json; fhirVersion=4.0"},
    )
    assert r4.status_code == 201
    search = client.get(f"{base(partition)}/Patient").get_json(force=True)
    assert search["total"] == 1


def test_an_accept_that_names_only_another_fhir_version_is_answered_406(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Patient/a"
    put(client, path, {"resourceType": "Patient", "id": "a"})
    refused = client.get(path, headers={"Accept": "application/fhir+json; fhirVersion=3.0"})
    assert refused.status_code == 406
    assert outcome_codes(refused) == ["not-supported"]
    either = client.get(
        path,
        headers={"Accept": "application/fhir+json; fhirVersion=5.0, application/fhir+json; fhirVersion=4.0"},
    )
    assert either.status_code == 200
    assert client.get(path, headers={"Accept": "application/fhir+json; fhirVersion=4.0"}).status_code == 200


def test_a_create_with_a_query_string_is_refused_and_creates_nothing(
    client: FlaskClient, partition: str
) -> None:
    # fhirpy's get_or_create() sent its condition in the URL and made a duplicate every time.
    for _ in range(2):
        sent = post(client, f"{base(partition)}/Patient?identifier=x|1", {"resourceType": "Patient"})
        assert sent.status_code == 400
        assert "If-None-Exist" in sent.get_json(force=True)["issue"][0]["diagnostics"]
    assert client.get(f"{base(partition)}/Patient").get_json(force=True)["total"] == 0
    formatted = post(client, f"{base(partition)}/Patient?_format=json", {"resourceType": "Patient"})
    assert formatted.status_code == 201


def test_a_create_with_a_query_string_is_allowed_when_the_client_asks_for_leniency(
    client: FlaskClient, partition: str
) -> None:
    sent = post(
        client, f"{base(partition)}/Patient?foo=bar", {"resourceType": "Patient"}, Prefer="handling=lenient"
    )
    assert sent.status_code == 201


def test_history_refuses_a_parameter_it_does_not_take(client: FlaskClient, partition: str) -> None:
    put(client, f"{base(partition)}/Patient/h", {"resourceType": "Patient", "id": "h"})
    for path in ("/Patient/_history", "/Patient/h/_history", "/_history"):
        refused = client.get(f"{base(partition)}{path}?foo=1")
        assert refused.status_code == 400, path
        assert outcome_codes(refused) == ["invalid"]
        assert client.get(f"{base(partition)}{path}?_count=5").status_code == 200, path


def test_instance_history_at_a_time_before_the_resource_existed_is_an_empty_bundle(
    client: FlaskClient, partition: str
) -> None:
    put(client, f"{base(partition)}/Patient/late", {"resourceType": "Patient", "id": "late"})
    answer = client.get(f"{base(partition)}/Patient/late/_history?_at=2001-01-01")
    assert answer.status_code == 200
    bundle = answer.get_json(force=True)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    assert bundle.get("entry", []) == []
    never = client.get(f"{base(partition)}/Patient/never/_history?_at=2001-01-01")
    assert never.status_code == 404


def test_an_update_with_identical_content_stores_no_new_version(client: FlaskClient, partition: str) -> None:
    path = f"{base(partition)}/Observation/same"
    body = {"resourceType": "Observation", "id": "same", "status": "final", "code": {"text": "x"}}
    assert put(client, path, body).status_code == 201
    read_back = client.get(path).get_json(force=True)
    # The same content again, and the version as read back (its meta included): still version 1.
    for again in (body, read_back):
        answer = put(client, path, again)
        assert answer.status_code == 200
        assert answer.headers["ETag"] == 'W/"1"'
        assert answer.get_json(force=True)["meta"]["versionId"] == "1"
    assert client.get(f"{path}/_history").get_json(force=True)["total"] == 1
    # A change, even of a decimal's precision alone, is a new version.
    changed = put(client, path, {**body, "valueQuantity": {"value": 1.5}})
    assert changed.headers["ETag"] == 'W/"2"'
    precise = client.put(
        path,
        data=b'{"resourceType":"Observation","id":"same","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":1.50}}',
        headers={"Content-Type": FHIR},
    )
    assert precise.headers["ETag"] == 'W/"3"'


def test_an_update_with_identical_content_after_a_delete_restores_the_resource(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Patient/back"
    body = {"resourceType": "Patient", "id": "back", "active": True}
    put(client, path, body)
    client.delete(path)
    restored = put(client, path, body)
    assert restored.status_code == 201
    assert restored.headers["ETag"] == 'W/"3"'
    assert client.get(path).status_code == 200


def test_an_operator_can_keep_every_identical_update_as_a_version(
    settings: Settings, database: Database, partition: str
) -> None:
    app = create_app(replace(settings, update_keep_identical=True), database=database)
    client = app.test_client()
    path = f"{base(partition)}/Patient/kept"
    body = {"resourceType": "Patient", "id": "kept"}
    put(client, path, body)
    assert put(client, path, body).headers["ETag"] == 'W/"2"'


def test_an_unknown_operation_is_a_fhir_outcome_that_names_it(client: FlaskClient, partition: str) -> None:
    put(client, f"{base(partition)}/Patient/op", {"resourceType": "Patient", "id": "op"})
    for path in ("/Patient/op/$frobnicate", "/Patient/$frobnicate", "/$frobnicate"):
        for method in ("GET", "POST"):
            answer = client.open(
                f"{base(partition)}{path}", method=method, json={"resourceType": "Parameters"}
            )
            assert answer.status_code == 400, (method, path)
            assert outcome_codes(answer) == ["not-supported"]
            diagnostics = answer.get_json(force=True)["issue"][0]["diagnostics"]
            assert "$frobnicate" in diagnostics
            assert "spelling" not in diagnostics
    # An operation the server offers, with a method it does not take, is still a 405.
    assert client.get(f"{base(partition)}/$import").status_code == 405


def test_a_plain_read_answers_304_to_a_client_that_holds_the_version(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Patient/cached"
    put(client, path, {"resourceType": "Patient", "id": "cached"})
    first = client.get(path)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    held = client.get(path, headers={"If-None-Match": etag})
    assert held.status_code == 304
    assert held.data == b""
    assert held.headers["ETag"] == etag
    assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(f"{path}/_history/1", headers={"If-None-Match": etag}).status_code == 304
    # An older version held, an earlier date, or a date no one can read: the resource itself.
    put(client, path, {"resourceType": "Patient", "id": "cached", "active": True})
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 200
    assert client.get(path, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    assert client.get(path, headers={"If-Modified-Since": "yesterday"}).status_code == 200
    # If-None-Match decides when both are sent.
    both = client.get(path, headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert both.status_code == 200


def test_pretty_output_is_indented_and_keeps_every_number_as_sent(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Observation/dec"
    client.put(path, data=_OBSERVATION, headers={"Content-Type": FHIR})
    compact = client.get(path)
    indented = client.get(f"{path}?_pretty=true")
    assert indented.status_code == 200
    assert indented.data.count(b"\n") > 5
    assert b'\n  "status": "final"' in indented.data
    assert b"66.899999999999991" in indented.data
    assert indented.get_json(force=True) == compact.get_json(force=True)
    assert b"\n" not in client.get(f"{path}?_pretty=false").data
    search = client.get(f"{base(partition)}/Observation?_pretty=true")
    assert search.data.startswith(b'{\n  "resourceType": "Bundle"')
