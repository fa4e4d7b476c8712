"""FHIR REST interactions in one partition: create, read, vread, update, delete, history."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.fhir import base, outcome_codes, post, put


def test_create_assigns_an_id_and_version_one_and_read_returns_it(
    client: FlaskClient, partition: str
) -> None:
    # Given a new patient, When it is created
    created = post(client, f"{base(partition)}/Patient", {"resourceType": "Patient", "active": True})
    # Then it has an id, version 1, a Location, and reads back equal
    assert created.status_code == 201
    body = created.get_json(force=True)
    assert body["meta"]["versionId"] == "1"
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"].endswith(f"/partitions/{partition}/Patient/{body['id']}/_history/1")
    read = client.get(f"{base(partition)}/Patient/{body['id']}")
    assert read.status_code == 200
    assert read.get_json(force=True) == body
    assert read.headers["Content-Type"].startswith("application/fhir+json")
    assert "Last-Modified" in read.headers


def test_update_with_a_client_id_creates_then_versions(client: FlaskClient, partition: str) -> None:
    path = f"{base(partition)}/Patient/p1"
    first = put(client, path, {"resourceType": "Patient", "id": "p1", "active": True})
    second = put(client, path, {"resourceType": "Patient", "id": "p1", "active": False})
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.get_json(force=True)["meta"]["versionId"] == "2"
    assert client.get(f"{path}/_history/1").get_json(force=True)["active"] is True
    assert client.get(path).get_json(force=True)["active"] is False


def test_if_match_with_a_stale_version_is_refused_with_412_and_changes_nothing(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Patient/p1"
    put(client, path, {"resourceType": "Patient", "id": "p1", "active": True})
    put(client, path, {"resourceType": "Patient", "id": "p1", "active": False})
    stale = put(
        client, path, {"resourceType": "Patient", "id": "p1", "gender": "male"}, **{"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert outcome_codes(stale) == ["conflict"]
    assert "gender" not in client.get(path).get_json(force=True)
    fresh = put(
        client, path, {"resourceType": "Patient", "id": "p1", "gender": "male"}, **{"If-Match": 'W/"2"'}
    )
    assert fresh.status_code == 200


def test_delete_makes_read_answer_410_and_history_keeps_the_versions(
    client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Observation/o1"
    put(client, path, {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}})
    assert client.delete(path).status_code == 204
    gone = client.get(path)
    assert gone.status_code == 410
    assert outcome_codes(gone) == ["deleted"]
    history = client.get(f"{path}/_history").get_json(force=True)
    assert history["type"] == "history"
    assert history["total"] == 2
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert history["entry"][1]["resource"]["id"] == "o1"


def test_decimal_precision_sent_by_the_client_is_kept(client: FlaskClient, partition: str) -> None:
    raw = (
        b'{"resourceType":"Observation","id":"d1","status":"final","code":{"text":"w"},'
        b'"valueQuantity":{"value":72.50,"unit":"kg"}}'
    )
    resp = client.put(
        f"{base(partition)}/Observation/d1", data=raw, headers={"Content-Type": "application/fhir+json"}
    )
    assert resp.status_code == 201
    assert b'"value":72.50' in client.get(f"{base(partition)}/Observation/d1").data


def test_prefer_return_minimal_gives_an_empty_body(client: FlaskClient, partition: str) -> None:
    resp = post(client, f"{base(partition)}/Patient", {"resourceType": "Patient"}, Prefer="return=minimal")
    assert resp.status_code == 201
    assert resp.data == b""
    assert resp.headers["ETag"] == 'W/"1"'


def test_root_paths_are_the_default_partition(client: FlaskClient) -> None:
    put(client, "/Patient/root-check", {"resourceType": "Patient", "id": "root-check"})
    assert client.get("/partitions/default/Patient/root-check").status_code == 200


def test_history_with_summary_count_gives_the_total_without_entries_and_refuses_other_summaries(
    client: FlaskClient, partition: str
) -> None:
    # Given a resource with three versions
    for gender in ("male", "female", "other"):
        put(client, f"{base(partition)}/Patient/h", {"resourceType": "Patient", "id": "h", "gender": gender})
    # When its history, its type's history and the partition's history are asked for with _summary=count
    counted = [
        client.get(f"{base(partition)}{path}?_summary=count").get_json()
        for path in ("/Patient/h/_history", "/Patient/_history", "/_history")
    ]
    # Then each is a history Bundle with the total and no entries or next link
    for bundle in counted:
        assert bundle["type"] == "history" and bundle["total"] == 3
        assert not bundle.get("entry") and [x["relation"] for x in bundle["link"]] == ["self"]
    # And a summary mode that history does not support is a 400 OperationOutcome
    refused = client.get(f"{base(partition)}/Patient/h/_history?_summary=text")
    assert refused.status_code == 400
    assert refused.get_json()["resourceType"] == "OperationOutcome"


def test_history_since_and_at_the_ends_of_the_calendar_are_answered_as_ranges(
    client: FlaskClient, partition: str
) -> None:
    # Given a resource with two versions
    b = base(partition)
    put(client, f"{b}/Patient/h", {"resourceType": "Patient", "id": "h"})
    put(client, f"{b}/Patient/h", {"resourceType": "Patient", "id": "h", "active": True})

    def total(query: str) -> int:
        response = client.get(f"{b}/Patient/h/_history?{query}")
        assert response.status_code == 200, response.data
        return int(response.get_json(force=True)["total"])

    # When history is asked since or at the calendar's first and last instants, Then nothing overflows
    assert total("_since=9999-12-31") == 0
    assert total("_since=9999-12-31T23:59:59.999999Z") == 0
    assert total("_at=9999-12-31") == 2
    assert total("_since=0001-01-01T00:00:00%2B05:00") == 2
    assert total("_at=0001-01-01") == 0
    assert client.get(f"{b}/_history?_since=9999-12-31").status_code == 200


def test_vread_of_a_version_no_version_column_can_hold_is_a_404_and_a_huge_offset_a_400(
    client: FlaskClient, partition: str
) -> None:
    # Given a resource with one version
    path = f"{base(partition)}/Patient/v"
    put(client, path, {"resourceType": "Patient", "id": "v"})
    # When versions beyond the integer column (or not in ASCII digits) are read, Then each is a 404
    for vid in ("2147483648", "9" * 41, "%C2%B2", "0"):
        response = client.get(f"{path}/_history/{vid}")
        assert response.status_code == 404, (vid, response.data)
        assert outcome_codes(response) == ["not-found"]
    assert client.get(f"{path}/_history/0001").get_json(force=True)["id"] == "v"
    # And an _offset beyond a bigint is a 400, not a database error
    response = client.get(f"{path}/_history?_offset={'9' * 41}")
    assert response.status_code == 400 and outcome_codes(response) == ["invalid"]
