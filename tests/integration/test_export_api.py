"""The $export HTTP contract (Bulk Data STU2) in one partition and across partitions.

Real PostgreSQL and S3 and the real job machinery (``orchestrator.service``, the export planner and
processor), its messages delivered in the test process by ``tests/support/bulkapi.py``; these tests check
the endpoints themselves: status codes, headers, absolute URLs, manifests, downloads and 404s from other
partitions. ``tests/e2e/test_export_e2e.py`` runs the same contract against worker processes.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from core.settings import Settings
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import BulkApi, bulk_api
from tests.support.fhir import base, outcome_codes, post, put

BASE = "http://bulkhead.test"


@pytest.fixture
def bulk(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> BulkApi:
    """Return the API with the job machinery run in-process (at most 2 exports at once per partition)."""
    return bulk_api(
        s3_settings.apply(settings),
        database,
        object_store,
        monkeypatch,
        export_max_concurrent_per_partition=2,
    )


@pytest.fixture
def export_app(bulk: BulkApi) -> Flask:
    return bulk.client.application


@pytest.fixture
def api(bulk: BulkApi) -> Iterator[FlaskClient]:
    yield bulk.client


def seed(client: FlaskClient, partition: str, gender: str) -> None:
    put(client, f"{base(partition)}/Patient/1", {"resourceType": "Patient", "id": "1", "gender": gender})
    put(client, f"{base(partition)}/Patient/2", {"resourceType": "Patient", "id": "2", "gender": gender})
    put(
        client,
        f"{base(partition)}/Observation/1",
        {"resourceType": "Observation", "id": "1", "status": "final", "code": {"text": gender}},
    )


def kick_off(client: FlaskClient, partition: str | None, query: str = "", **headers: str) -> str:
    resp = client.get(f"{base(partition)}/$export{query}", headers={"Prefer": "respond-async", **headers})
    assert resp.status_code == 202, resp.data
    return resp.headers["Content-Location"]


def path_of(url: str) -> str:
    assert url.startswith(BASE), url
    return url[len(BASE) :]


def test_kick_off_returns_202_and_an_absolute_status_url_under_the_partition_base(
    api: FlaskClient, partition: str
) -> None:
    seed(api, partition, "female")
    location = kick_off(api, partition)
    assert location.startswith(f"{BASE}/partitions/{partition}/_operations/export/")


def test_the_root_base_exports_the_default_partition_with_root_urls(bulk: BulkApi, api: FlaskClient) -> None:
    location = kick_off(api, None, "?_type=Patient")
    assert location.startswith(f"{BASE}/_operations/export/")
    manifest = bulk.finish(location).get_json()
    assert manifest["request"] == f"{BASE}/$export?_type=Patient"


def test_behind_a_trusted_proxy_its_forwarded_host_and_proto_make_the_status_url(
    export_app: Flask, settings: Settings, partition: str
) -> None:
    # Given no configured public base URL, and one trusted proxy in front
    app = create_app(
        replace(export_app.config["BULKHEAD_SETTINGS"], public_base_url=None, trusted_proxies=1),
        database=export_app.extensions["bulkhead.db"],
    )
    app.extensions["bulkhead.objectstore"] = export_app.extensions["bulkhead.objectstore"]
    headers = {
        "X-Forwarded-Host": "fhir.example.org",
        "X-Forwarded-Proto": "https",
        "Prefer": "respond-async",
    }
    resp = app.test_client().get(f"/partitions/{partition}/$export", headers=headers)
    assert resp.headers["Content-Location"].startswith(f"https://fhir.example.org/partitions/{partition}/")


def test_a_completed_export_has_a_stu2_manifest_with_exact_counts_and_an_expires_header(
    bulk: BulkApi, api: FlaskClient, partition: str
) -> None:
    seed(api, partition, "female")
    resp = bulk.finish(kick_off(api, partition))
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert "Expires" in resp.headers
    manifest = resp.get_json()
    assert set(manifest) >= {"transactionTime", "request", "requiresAccessToken", "output", "error"}
    assert manifest["request"] == f"{BASE}/partitions/{partition}/$export"
    assert manifest["error"] == [] and "deleted" not in manifest
    counts = {item["type"]: item["count"] for item in manifest["output"]}
    assert counts == {"Observation": 1, "Patient": 2}
    assert all(item["url"].startswith(f"{BASE}/partitions/{partition}/") for item in manifest["output"])


def test_files_download_as_fhir_ndjson_without_an_accept_header_and_gzip_when_asked(
    bulk: BulkApi, api: FlaskClient, partition: str
) -> None:
    seed(api, partition, "female")
    manifest = bulk.finish(kick_off(api, partition, "?_type=Patient")).get_json()
    url = path_of(manifest["output"][0]["url"])
    plain = api.get(url)
    assert plain.status_code == 200 and plain.mimetype == "application/fhir+ndjson"
    assert "Content-Encoding" not in plain.headers
    assert plain.data.count(b"\n") == 2
    packed = api.get(url, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.data) == plain.data


def test_an_empty_partition_completes_with_no_output(bulk: BulkApi, api: FlaskClient, partition: str) -> None:
    manifest = bulk.finish(kick_off(api, partition)).get_json()
    assert manifest["output"] == [] and manifest["error"] == []


def test_since_adds_deleted_bundles_to_the_manifest(bulk: BulkApi, api: FlaskClient, partition: str) -> None:
    seed(api, partition, "female")
    first = bulk.finish(kick_off(api, partition)).get_json()
    api.delete(f"{base(partition)}/Patient/2")
    since = first["transactionTime"]
    manifest = bulk.finish(kick_off(api, partition, f"?_since={since}")).get_json()
    assert manifest["output"] == []
    assert [item["type"] for item in manifest["deleted"]] == ["Bundle"]
    line = orjson.loads(api.get(path_of(manifest["deleted"][0]["url"])).data)
    assert line["entry"][0]["request"] == {"method": "DELETE", "url": "Patient/2"}


@pytest.mark.parametrize(
    ("since", "expected"),
    [("9999-12-31", {}), ("0001-01-01T00:00:00%2B05:00", {"Observation": 1, "Patient": 2})],
)
def test_an_export_since_either_end_of_the_calendar_completes(
    bulk: BulkApi, api: FlaskClient, partition: str, since: str, expected: dict[str, int]
) -> None:
    # Given a partition with data
    seed(api, partition, "female")
    # When an export is asked for since the calendar's last day, or since its first instant east of UTC
    manifest = bulk.finish(kick_off(api, partition, f"?_since={since}")).get_json()
    # Then it completes: nothing changed after the first, everything after the second
    assert {item["type"]: item["count"] for item in manifest["output"]} == expected
    assert manifest["error"] == []


@pytest.mark.parametrize(
    "query",
    [
        "?_outputFormat=text/csv",
        "?_type=Nope",
        "?_since=soon",
        "?_foo=bar",
        "?_typeFilter=Patient?_sort=name",
    ],
)
def test_a_bad_kick_off_is_a_400_operation_outcome(api: FlaskClient, partition: str, query: str) -> None:
    resp = api.get(f"{base(partition)}/$export{query}", headers={"Prefer": "respond-async"})
    assert resp.status_code == 400
    assert outcome_codes(resp)


def test_lenient_handling_ignores_unknown_parameters_and_reports_them_in_error(
    bulk: BulkApi, api: FlaskClient, partition: str
) -> None:
    location = kick_off(api, partition, "?_foo=bar", Prefer="respond-async, handling=lenient")
    manifest = bulk.finish(location).get_json()
    assert [item["type"] for item in manifest["error"]] == ["OperationOutcome"]
    outcome = orjson.loads(api.get(path_of(manifest["error"][0]["url"])).data)
    assert outcome["issue"][0]["severity"] == "information"


def test_post_kick_off_takes_a_parameters_body_and_patient_references(
    bulk: BulkApi, api: FlaskClient, partition: str
) -> None:
    seed(api, partition, "female")
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "patient", "valueReference": {"reference": "Patient/1"}},
        ],
    }
    resp = post(api, f"{base(partition)}/Patient/$export", body, Prefer="respond-async")
    assert resp.status_code == 202
    manifest = bulk.finish(resp.headers["Content-Location"]).get_json()
    assert manifest["request"] == f"{BASE}/partitions/{partition}/Patient/$export"
    lines = api.get(path_of(manifest["output"][0]["url"])).data.splitlines()
    assert [orjson.loads(x)["id"] for x in lines] == ["1"]


def test_an_unknown_patient_or_one_of_another_partition_is_a_400(
    api: FlaskClient, partition: str, other_partition: str
) -> None:
    seed(api, other_partition, "male")
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/1"}}],
    }
    resp = post(api, f"{base(partition)}/Patient/$export", body, Prefer="respond-async")
    assert resp.status_code == 400


def test_group_export_returns_only_the_members_compartments_and_an_unknown_group_is_404(
    bulk: BulkApi, api: FlaskClient, partition: str
) -> None:
    seed(api, partition, "female")
    put(
        api,
        f"{base(partition)}/Group/g",
        {
            "resourceType": "Group",
            "id": "g",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/2"}}],
        },
    )
    resp = api.get(f"{base(partition)}/Group/g/$export?_type=Patient", headers={"Prefer": "respond-async"})
    manifest = bulk.finish(resp.headers["Content-Location"]).get_json()
    lines = api.get(path_of(manifest["output"][0]["url"])).data.splitlines()
    assert [orjson.loads(x)["id"] for x in lines] == ["2"]
    assert (
        api.get(f"{base(partition)}/Group/nope/$export", headers={"Prefer": "respond-async"}).status_code
        == 404
    )


def test_delete_answers_202_then_every_poll_and_file_is_404(
    bulk: BulkApi, api: FlaskClient, partition: str
) -> None:
    seed(api, partition, "female")
    location = path_of(kick_off(api, partition))
    file_url = path_of(bulk.finish(BASE + location).get_json()["output"][0]["url"])
    assert api.delete(location).status_code == 202
    assert api.get(location).status_code == 404
    assert api.get(location).status_code == 404
    assert api.get(file_url).status_code == 404


def test_deleting_a_completed_export_says_it_was_released_and_a_running_one_that_it_was_cancelled(
    bulk: BulkApi, api: FlaskClient, partition: str
) -> None:
    # Given a completed export and one still queued
    seed(api, partition, "female")
    finished = path_of(kick_off(api, partition))
    assert bulk.finish(BASE + finished).status_code == 200
    queued = path_of(kick_off(api, partition))
    # When both status URLs are deleted
    released, cancelled = api.delete(finished), api.delete(queued)
    # Then each answer says what happened to its job
    assert released.status_code == cancelled.status_code == 202
    assert "released" in released.get_json()["issue"][0]["diagnostics"]
    assert "cancelled" in cancelled.get_json()["issue"][0]["diagnostics"]


def test_the_concurrent_export_limit_of_a_partition_is_a_429_with_retry_after(
    api: FlaskClient, partition: str, other_partition: str
) -> None:
    # (no message is delivered: the jobs stay queued)
    kick_off(api, partition)
    kick_off(api, partition)
    resp = api.get(f"{base(partition)}/$export", headers={"Prefer": "respond-async"})
    assert resp.status_code == 429 and resp.headers["Retry-After"].isdigit()
    assert outcome_codes(resp) == ["throttled"]
    # another partition is not affected
    kick_off(api, other_partition)


def test_a_running_export_answers_202_with_progress_and_retry_after(api: FlaskClient, partition: str) -> None:
    # Given an export whose messages are not delivered yet
    # When it is polled
    resp = api.get(path_of(kick_off(api, partition)))
    # Then it is still running
    assert resp.status_code == 202
    assert resp.headers["Retry-After"].isdigit() and resp.headers["X-Progress"]
    # And its empty answer claims no content type (it used to say text/html)
    assert resp.data == b"" and "Content-Type" not in resp.headers


def test_operations_lists_only_this_partitions_jobs(
    bulk: BulkApi, api: FlaskClient, partition: str, other_partition: str
) -> None:
    mine = bulk.finish(kick_off(api, partition)).request.path.rsplit("/", 1)[-1]
    theirs = bulk.finish(kick_off(api, other_partition)).request.path.rsplit("/", 1)[-1]
    listing = api.get(f"{base(partition)}/_operations?kind=export&status=completed").get_json()
    ids = [
        part["valueString"] for job in listing["parameter"] for part in job["part"] if part["name"] == "id"
    ]
    assert mine in ids and theirs not in ids


@pytest.mark.parametrize("stored_gzip", [True, False], ids=["gzip objects", "plain objects"])
def test_a_file_downloads_the_same_ndjson_with_and_without_accept_encoding_however_it_is_stored(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    partition: str,
    stored_gzip: bool,
) -> None:
    # Given an API whose exports are stored gzip-compressed, or as plain NDJSON
    settings_here = s3_settings.apply(settings)
    bulk = bulk_api(settings_here, database, object_store, monkeypatch, export_gzip=stored_gzip)
    api = bulk.client
    seed(api, partition, "female")
    manifest = bulk.finish(kick_off(api, partition, "?_type=Patient")).get_json()
    item = manifest["output"][0]
    prefix = object_store.job_prefix(partition, path_of(item["url"]).split("/")[-2])
    stored = b"".join(b"".join(object_store.get_stream(k)) for k in object_store.list_keys(prefix))
    # When its file is downloaded without and with Accept-Encoding: gzip
    plain = api.get(path_of(item["url"]))
    packed = api.get(path_of(item["url"]), headers={"Accept-Encoding": "gzip"})
    # Then the object is gzip or the NDJSON itself; the plain download has the manifest's count of lines
    # (inflated when stored gzip); the gzip download inflates to the same bytes
    assert stored[:2] == b"\x1f\x8b" if stored_gzip else stored == plain.data
    assert "Content-Encoding" not in plain.headers and plain.headers["Content-Length"] == str(len(plain.data))
    assert [orjson.loads(x)["id"] for x in plain.data.splitlines()] == ["1", "2"] and item["count"] == 2
    assert packed.headers["Content-Encoding"] == "gzip" and gzip.decompress(packed.data) == plain.data
