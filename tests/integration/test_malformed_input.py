"""The malformed-input battery: every refused request gets its status and an OperationOutcome, and changes
nothing that is stored (history totals and the partition list stay the same)."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from core.settings import Settings
from storage import Database
from tests.support.fhir import FHIR, base, put
from tests.support.stored_state import assert_outcome, stored_state


@dataclass(frozen=True)
class Case:
    """One malformed request: method, path below the partition's base, body, headers, expected answer."""

    name: str
    method: str
    path: str
    body: bytes | None
    status: int
    code: str | None = None
    content_type: str | None = FHIR
    headers: tuple[tuple[str, str], ...] = ()


def deep_patient(levels: int) -> bytes:
    """Return a Patient whose extensions nest ``levels`` deep."""
    inner = '{"url":"http://example.org/x","valueString":"a"}'
    for _ in range(levels):
        inner = '{"url":"http://example.org/x","extension":[' + inner + "]}"
    return ('{"resourceType":"Patient","extension":[' + inner + "]}").encode()


PATIENT = b'{"resourceType":"Patient","id":"p1","active":true}'
JOB = "0123456789abcdef" * 2  # the shape of a job id, naming no job
CASES = [
    # 400: the request itself is malformed
    Case("malformed JSON on create", "POST", "/Patient", b'{"resourceType":"Patient",', 400, "invalid"),
    Case("malformed JSON on update", "PUT", "/Patient/p1", b'{"resourceType":', 400, "invalid"),
    Case("malformed JSON as a transaction", "POST", "/", b'{"resourceType":"Bundle"', 400, "invalid"),
    Case("a JSON array", "POST", "/Patient", b'[{"resourceType":"Patient"}]', 400, "invalid"),
    Case("a JSON string", "PUT", "/Patient/p1", b'"Patient"', 400, "invalid"),
    Case("a JSON number", "POST", "/", b"42", 400, "invalid"),
    Case("JSON null", "POST", "/Patient", b"null", 400, "invalid"),
    Case("an empty body", "POST", "/Patient", b"", 400, "invalid"),
    Case("bytes that are not UTF-8", "POST", "/Patient", b'{"resourceType":"Patient","a":"\xff"}', 400),
    Case("a lone surrogate", "POST", "/Patient", b'{"resourceType":"Patient","b":"\\ud800"}', 400),
    Case("JSON nested beyond the parser's limit", "POST", "/Patient", deep_patient(600), 400),
    Case("no resourceType", "POST", "/Patient", b'{"active":true}', 400, "required"),
    Case("body type differs from the URL", "PUT", "/Patient/p1", b'{"resourceType":"Group","id":"p1"}', 400),
    Case("body id differs from the URL", "PUT", "/Patient/p1", b'{"resourceType":"Patient","id":"p2"}', 400),
    Case("an update without an id in the body", "PUT", "/Patient/p1", b'{"resourceType":"Patient"}', 400),
    Case("an id that is not a FHIR id", "GET", "/Patient/a$b", None, 400, "invalid"),
    Case("an id longer than 64 characters", "PUT", "/Patient/" + "a" * 65, PATIENT, 400),
    Case("a _count that is not a number", "GET", "/_history?_count=ten", None, 400, "invalid"),
    Case("a _since that is not a date", "GET", "/Patient/_history?_since=yesterday", None, 400),
    Case("a Bundle that is a collection", "POST", "/", b'{"resourceType":"Bundle","type":"collection"}', 400),
    Case("a Patient posted to the base", "POST", "/", b'{"resourceType":"Patient"}', 400),
    # 404: nothing of that name
    Case("an unknown type read", "GET", "/Foo/1", None, 404, "not-found"),
    Case("an unknown type created", "POST", "/Foo", b'{"resourceType":"Foo"}', 404, "not-found"),
    Case("an unknown type updated", "PUT", "/Foo/1", b'{"resourceType":"Foo","id":"1"}', 404, "not-found"),
    Case("a type in lower case", "GET", "/patient/p1", None, 404, "not-found"),
    Case("an unknown id", "GET", "/Patient/nobody", None, 404, "not-found"),
    Case("an unknown version", "GET", "/Patient/p1/_history/99", None, 404, "not-found"),
    Case("a version that is not a number", "GET", "/Patient/p1/_history/x", None, 404, "not-found"),
    Case("the history of an unknown id", "GET", "/Patient/nobody/_history", None, 404, "not-found"),
    # 4xx, not 500: control characters, integers beyond their columns and digits that are not ASCII
    Case("a NUL after a job id", "GET", f"/_operations/export/{JOB}%00", None, 400, "invalid"),
    Case("a NUL in a resource id", "GET", "/Patient/p1%00", None, 400, "invalid"),
    Case("a control character in a search value", "GET", "/Patient?name=a%01", None, 400, "invalid"),
    Case("a NUL in a job listing's kind", "GET", "/_operations?kind=%00", None, 400, "invalid"),
    Case("a version beyond the version column", "GET", "/Patient/p1/_history/2147483648", None, 404),
    Case("a version of 41 digits", "GET", "/Patient/p1/_history/" + "9" * 41, None, 404, "not-found"),
    Case("a version of 5,000 digits", "GET", "/Patient/p1/_history/" + "9" * 5000, None, 404, "not-found"),
    Case("a version in superscript digits", "GET", "/Patient/p1/_history/%C2%B2", None, 404, "not-found"),
    Case("an _offset of 41 digits", "GET", "/_history?_offset=" + "9" * 41, None, 400, "invalid"),
    Case("a _count in superscript digits", "GET", "/_history?_count=%C2%B2", None, 400, "invalid"),
    Case("a search _count in Arabic-Indic digits", "GET", "/Patient?_count=%D9%A3", None, 400, "invalid"),
    Case(
        "an If-Match of 5,000 digits",
        "PUT",
        "/Patient/p1",
        PATIENT,
        412,
        "conflict",
        headers=(("If-Match", 'W/"' + "9" * 5000 + '"'),),
    ),
    Case(
        "an If-Match beyond the version column",
        "DELETE",
        "/Patient/p1",
        None,
        412,
        "conflict",
        headers=(("If-Match", 'W/"2147483648"'),),
    ),
    Case("a job id in capitals", "GET", f"/_operations/export/{JOB.upper()}", None, 404, "not-found"),
    Case("a job id of 5,000 characters", "DELETE", "/_operations/import/" + "a" * 5000, None, 404),
    Case("a file of a job id too short", "GET", "/_operations/bulk-delete/abc/error-1.ndjson", None, 404),
    # 400: conditional writes without criteria never mean "every resource of the type"
    Case("DELETE on a type without criteria", "DELETE", "/Patient", None, 400, "invalid"),
    Case("PUT on a type without criteria", "PUT", "/Patient", PATIENT, 400, "invalid"),
    Case("DELETE on a type with only _format", "DELETE", "/Patient?_format=json", None, 400, "invalid"),
    Case("an empty JSON Patch", "PATCH", "/Patient/p1", b"[]", 400, "invalid", "application/json-patch+json"),
    # 405: the interaction does not exist on that path
    Case("POST on an instance", "POST", "/Patient/p1", PATIENT, 405, "not-supported"),
    Case("DELETE on the base", "DELETE", "/", None, 405, "not-supported"),
    # 406: a format other than JSON asked for
    Case(
        "Accept XML",
        "GET",
        "/Patient/p1",
        None,
        406,
        "not-supported",
        headers=(("Accept", "application/fhir+xml"),),
    ),
    Case("_format=xml", "GET", "/Patient/p1?_format=xml", None, 406, "not-supported"),
    Case("_format=xml on a create", "POST", "/Patient?_format=xml", b'{"resourceType":"Patient"}', 406),
    # 410: deleted
    Case("a deleted resource read", "GET", "/Patient/gone", None, 410, "deleted"),
    # 412: precondition
    Case(
        "a stale If-Match on update",
        "PUT",
        "/Patient/p1",
        PATIENT,
        412,
        "conflict",
        headers=(("If-Match", 'W/"7"'),),
    ),
    Case(
        "a stale If-Match on delete",
        "DELETE",
        "/Patient/p1",
        None,
        412,
        "conflict",
        headers=(("If-Match", 'W/"7"'),),
    ),
    # 415: not JSON
    Case("text/plain", "POST", "/Patient", b'{"resourceType":"Patient"}', 415, "not-supported", "text/plain"),
    Case("XML", "POST", "/Patient", b"<Patient/>", 415, "not-supported", "application/fhir+xml"),
    Case("no Content-Type", "PUT", "/Patient/p1", PATIENT, 415, "not-supported", None),
    Case(
        "a form", "POST", "/Patient", b"resourceType=Patient", 415, None, "application/x-www-form-urlencoded"
    ),
    Case("XML to the base", "POST", "/", b"<Bundle/>", 415, "not-supported", "application/xml"),
    Case("a patch as text", "PATCH", "/Patient/p1", b"[]", 415, "not-supported", "text/plain"),
    # 422: well-formed but not a valid resource
    Case(
        "an unknown code",
        "POST",
        "/Patient",
        b'{"resourceType":"Patient","gender":"robot"}',
        422,
        "code-invalid",
    ),
    Case("a null value", "PUT", "/Patient/p1", b'{"resourceType":"Patient","id":"p1","active":null}', 422),
    Case("an unknown element", "POST", "/Patient", b'{"resourceType":"Patient","nickname":"x"}', 422),
    Case("a string for a boolean", "POST", "/Patient", b'{"resourceType":"Patient","active":"true"}', 422),
    Case(
        "a missing required element",
        "POST",
        "/Observation",
        b'{"resourceType":"Observation","status":"final"}',
        422,
    ),
    Case(
        "a NUL character", "POST", "/Patient", b'{"resourceType":"Patient","name":[{"text":"a\\u0000"}]}', 422
    ),
    Case("elements nested too deep", "POST", "/Patient", deep_patient(80), 422, "too-costly"),
    Case(
        "an invalid resource in a transaction",
        "POST",
        "/",
        b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient",'
        b'"gender":"robot"},"request":{"method":"POST","url":"Patient"}}]}',
        422,
        "code-invalid",
    ),
]


def seed(client: FlaskClient, partition: str, other_partition: str) -> None:
    """Store Patient/p1 in both partitions and a deleted Patient/gone in the first."""
    for name in (partition, other_partition):
        put(client, f"{base(name)}/Patient/p1", {"resourceType": "Patient", "id": "p1", "active": True})
    put(client, f"{base(partition)}/Patient/gone", {"resourceType": "Patient", "id": "gone"})
    assert client.delete(f"{base(partition)}/Patient/gone").status_code == 204


def send(client: FlaskClient, case: Case, prefix: str) -> TestResponse:
    """Send one case below ``prefix``."""
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    path = (prefix + case.path) if case.path != "/" else (prefix or "/")
    return client.open(path, method=case.method, data=case.body, headers=headers)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_malformed_request_gets_its_status_and_an_outcome_and_changes_nothing(
    client: FlaskClient, partition: str, other_partition: str, case: Case
) -> None:
    # Given two partitions with data
    seed(client, partition, other_partition)
    before = stored_state(client, partition, other_partition)
    # When the malformed request is sent in the first partition
    resp = send(client, case, base(partition))
    # Then it gets its status and an OperationOutcome without a stack trace, and nothing changed
    if case.code is None:
        assert_outcome(resp, case.status)
    else:
        assert_outcome(resp, case.status, case.code)
    assert stored_state(client, partition, other_partition) == before


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.status in {400, 404, 415, 422}][:12], ids=lambda c: c.name
)
def test_a_malformed_request_at_the_root_is_refused_the_same_way(client: FlaskClient, case: Case) -> None:
    before = stored_state(client, None)
    resp = send(client, case, "")
    assert resp.status_code == case.status, resp.data
    assert resp.get_json(force=True)["resourceType"] == "OperationOutcome"
    assert stored_state(client, None) == before


@pytest.mark.parametrize(
    "name",
    ["ADMIN", "System", "metadata", "..", ".", "a" * 65, "a b", "caf\u00e9", "\u0430dmin", "x;y"],
)
def test_a_bad_partition_name_is_a_400_and_creates_nothing(client: FlaskClient, name: str) -> None:
    before = stored_state(client)
    for method, path, body in (
        ("GET", "/Patient/p1", None),
        ("PUT", "/Patient/p1", PATIENT),
        ("POST", "/", b'{"resourceType":"Bundle","type":"batch"}'),
    ):
        resp = client.open(
            f"/partitions/{name}{path}", method=method, data=body, headers={"Content-Type": FHIR}
        )
        assert_outcome(resp, 400, "invalid")
    assert stored_state(client) == before


BAD_JOB_IDS = [f"{JOB}%00", f"{JOB}%01", JOB[:31], JOB + "0", JOB.upper(), "..", "%2e%2e", "a" * 5000]


@pytest.mark.parametrize("kind", ["export", "import", "reindex", "bulk-update", "bulk-delete"])
@pytest.mark.parametrize("job_id", [*BAD_JOB_IDS, "%C3%A9" * 16], ids=lambda j: j[:40])
def test_a_job_url_whose_id_cannot_be_a_job_is_a_4xx_for_every_kind_and_method(
    client: FlaskClient, partition: str, other_partition: str, kind: str, job_id: str
) -> None:
    # Given a partition with data
    seed(client, partition, other_partition)
    before = stored_state(client, partition, other_partition)
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/error-1.ndjson")):
        # When a job URL with an id no job can have is polled, cancelled or downloaded
        resp = client.open(f"{base(partition)}/_operations/{kind}/{job_id}{suffix}", method=method)
        # Then it is a 404 (or a 400 for a control character), an OperationOutcome, before any query
        assert_outcome(resp, 400 if "%0" in job_id else 404)
    assert stored_state(client, partition, other_partition) == before


EDGE_QUERIES = [
    ("/$export?_since=9999-12-31", 202),
    ("/$export?_since=0001-01-01T00:00:00%2B05:00", 202),
    ("/Patient?_lastUpdated=gt9999-12-31T23:59:59Z", 200),
    ("/Patient?_lastUpdated=ap0001-01-01", 200),
    ("/Patient?birthdate=ap9999-12-31", 200),
    ("/Patient?birthdate=ap0001-01-01", 200),
    ("/Patient?birthdate=9999-12-31T23:00:00-05:00", 200),
    ("/Patient?birthdate=sa9999", 200),
    ("/_history?_since=9999-12-31", 200),
    ("/_history?_at=9999-12-31", 200),
    ("/Patient/p1/_history?_since=0001-01-01T00:00:00%2B05:00", 200),
    ("/Patient/_history?_at=0001-01-01", 200),
    ("/Condition?_id=a,b&_total=estimate", 200),
    ("/Observation?value-quantity=1e999999999", 200),
    ("/Observation?value-quantity=lt-1e-999999999&_total=estimate", 200),
    ("/Patient?_count=" + "9" * 41, 200),
]


@pytest.mark.parametrize(("path", "status"), EDGE_QUERIES, ids=[p for p, _ in EDGE_QUERIES])
def test_a_value_at_the_edge_of_its_range_is_answered_and_changes_nothing(
    client: FlaskClient, partition: str, other_partition: str, path: str, status: int
) -> None:
    # Given two partitions with data (a patient born on the calendar's last day among them)
    seed(client, partition, other_partition)
    put(
        client,
        f"{base(partition)}/Patient/edge",
        {"resourceType": "Patient", "id": "edge", "birthDate": "9999-12-31"},
    )
    before = stored_state(client, partition, other_partition)
    # When a date at the end of the calendar, a huge number or an IN-list estimate is asked for
    resp = client.get(f"{base(partition)}{path}", headers={"Prefer": "respond-async"})
    # Then it is answered like any other value (these are valid), and nothing stored changed
    assert resp.status_code == status, resp.data[:500]
    assert stored_state(client, partition, other_partition) == before


def test_a_body_over_the_size_limit_is_a_413_and_stores_nothing(
    settings: Settings, database: Database, partition: str
) -> None:
    # Given a server that accepts bodies of at most 2,000 bytes
    small = create_app(replace(settings, max_body_bytes=2000), database=database).test_client()
    before = stored_state(small, partition)
    big = {"resourceType": "Patient", "id": "big", "name": [{"text": "x" * 3000}]}
    # When bigger ones are sent to create, update and the base, Then 413 each time and nothing stored
    assert_outcome(small.post(f"{base(partition)}/Patient", json=big, headers={"Content-Type": FHIR}), 413)
    assert_outcome(small.put(f"{base(partition)}/Patient/big", json=big, headers={"Content-Type": FHIR}), 413)
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": big, "request": {"method": "PUT", "url": "Patient/big"}}],
    }
    assert_outcome(small.post(base(partition), json=tx, headers={"Content-Type": FHIR}), 413)
    assert stored_state(small, partition) == before


def race(app: Flask, threads: int, send_one: Any) -> list[TestResponse]:
    """Run ``send_one(client)`` in ``threads`` threads released at the same instant."""
    barrier = threading.Barrier(threads)

    def run(_: int) -> TestResponse:
        client = app.test_client()
        barrier.wait()
        response: TestResponse = send_one(client)
        return response

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, range(threads)))


def test_concurrent_creates_of_one_client_id_store_one_version_one_and_answer_409_to_the_losers(
    app: Flask, client: FlaskClient, partition: str
) -> None:
    saw_conflict = False
    for attempt in range(15):
        rid = f"race-{attempt}"
        body = {"resourceType": "Patient", "id": rid}
        # When six clients create the same id at the same instant
        answers = race(
            app,
            6,
            lambda c, rid=rid, body=body: c.put(
                f"{base(partition)}/Patient/{rid}", json=body, headers={"Content-Type": FHIR}
            ),
        )
        statuses = [a.status_code for a in answers]
        # Then exactly one created it; the others updated it after that commit or got 409
        assert statuses.count(201) == 1, statuses
        assert set(statuses) <= {200, 201, 409}, statuses
        for answer in answers:
            if answer.status_code == 409:
                assert_outcome(answer, 409, "conflict")
        history = client.get(f"{base(partition)}/Patient/{rid}/_history").get_json(force=True)
        assert history["total"] == sum(1 for s in statuses if s < 300)
        saw_conflict = saw_conflict or 409 in statuses
        if saw_conflict:
            break
    assert saw_conflict, "no two creates ever overlapped"


def test_concurrent_updates_of_one_resource_never_lose_a_version(
    app: Flask, client: FlaskClient, partition: str
) -> None:
    path = f"{base(partition)}/Patient/hot"
    put(client, path, {"resourceType": "Patient", "id": "hot"})
    successes = 1
    saw_conflict = False
    # Each writer's content its own (an update identical to the current version stores no version).
    writers = itertools.count()
    for attempt in range(15):

        def write(c: FlaskClient, attempt: int = attempt) -> Any:
            body = {"resourceType": "Patient", "id": "hot", "birthDate": f"19{attempt:02d}"}
            body["name"] = [{"text": f"writer {next(writers)}"}]
            return c.put(path, json=body, headers={"Content-Type": FHIR})

        answers = race(app, 6, write)
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 409}, statuses
        assert 200 in statuses
        for answer in answers:
            if answer.status_code == 409:
                assert_outcome(answer, 409, "conflict")
        successes += statuses.count(200)
        saw_conflict = saw_conflict or 409 in statuses
        if saw_conflict and attempt >= 2:
            break
    # Then every success is one version, in order, and the current one is the last
    current = client.get(path).get_json(force=True)
    assert current["meta"]["versionId"] == str(successes)
    assert client.get(f"{path}/_history").get_json(force=True)["total"] == successes
    assert saw_conflict, "no two updates ever overlapped"
