"""The import planner, processor and finish on real PostgreSQL, S3 and a local HTTP server (run inline)."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from core.errors import InputUnreadable, InvalidRequest
from core.importspec import parse_import
from core.jobs import ANONYMOUS, PermanentJobError
from core.settings import Settings
from harness.services import S3Settings
from orchestrator import service
from orchestrator.import_ import finish_import, plan_import, prepare_import
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.http_files import FileServer
from tests.support.jobinproc import RecordingSender
from tests.support.run_inline import run_inline
from workers.import_ import process_import


@pytest.fixture
def s3_app_settings(settings: Settings, s3_settings: S3Settings) -> Settings:
    """Return settings with the test object store."""
    return s3_settings.apply(settings)


def ndjson(resources: list[dict[str, Any]]) -> bytes:
    """Serialise resources as NDJSON."""
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def patients(n: int, family: str, start: int = 0) -> list[dict[str, Any]]:
    """Return ``n`` patients p{start}.. with a family name."""
    return [
        {"resourceType": "Patient", "id": f"p{i}", "name": [{"family": family, "given": [f"G{i}" * 5]}]}
        for i in range(start, start + n)
    ]


def body(*urls: str, rtype: str | None = "Patient", **params: str) -> dict[str, Any]:
    """Return a $import Parameters body."""
    parameter: list[dict[str, Any]] = [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}]
    parameter += [{"name": k, "valueString": v} for k, v in params.items()]
    for url in urls:
        parts: list[dict[str, Any]] = [{"name": "url", "valueUrl": url}]
        if rtype:
            parts.append({"name": "type", "valueCode": rtype})
        parameter.append({"name": "input", "part": parts})
    return {"resourceType": "Parameters", "parameter": parameter}


def run(
    settings: Settings,
    database: Database,
    store: S3ObjectStore,
    partition: str,
    request: dict[str, Any],
    **kw: Any,
) -> dict[str, Any]:
    """Prepare and run one import inline; return its result."""
    definition = prepare_import(database, settings, store, partition, parse_import(request))
    return run_inline(
        settings, database, store, partition, definition, plan_import, process_import, finish_import, **kw
    )


def stored(database: Database, partition: str) -> list[tuple[str, int, bool, dict[str, Any]]]:
    """Return (id, version, is_history, resource) of every stored version in the partition."""
    with database.unit_of_work(partition) as uow:
        rows = uow.session.execute(
            text("SELECT resource_id, version, is_history, raw FROM resource ORDER BY resource_id, version")
        ).all()
    return [(r[0], r[1], r[2], orjson.loads(r[3])) for r in rows]


def test_an_http_import_into_two_partitions_with_colliding_ids_keeps_each_partitions_own(
    files: FileServer,
    s3_app_settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
):
    # Given two files with the same ids and different names, split into 1 KiB ranges
    url_a = files.put(f"/{partition}/a.ndjson", ndjson(patients(40, "Alpha")))
    url_b = files.put(f"/{partition}/b.ndjson", ndjson(patients(40, "Beta")))
    # When each is imported into its own partition
    ra = run(
        s3_app_settings, database, object_store, partition, body(url_a, processingUnitBytesToRead="1024")
    )
    rb = run(
        s3_app_settings,
        database,
        object_store,
        other_partition,
        body(url_b, processingUnitBytesToRead="1024"),
    )
    # Then each partition holds its own 40 patients, once each
    assert ra["output"] == [{"type": "Patient", "count": 40, "inputUrl": url_a}]
    assert rb["output"] == [{"type": "Patient", "count": 40, "inputUrl": url_b}]
    a, b = stored(database, partition), stored(database, other_partition)
    assert len(a) == len(b) == 40
    assert {r[3]["name"][0]["family"] for r in a} == {"Alpha"}
    assert {r[3]["name"][0]["family"] for r in b} == {"Beta"}
    assert ra["error"] == [] and ra["totals"]["lines"] == 40


def test_bad_lines_land_in_the_error_file_with_their_line_numbers_and_the_rest_imports(
    files: FileServer,
    s3_app_settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
):
    # Given a file whose lines 2, 4 and 5 are broken JSON, an invalid code and a missing id
    lines = [
        orjson.dumps({"resourceType": "Patient", "id": "ok1"}),
        b'{"resourceType": "Patient", "id": ',
        orjson.dumps({"resourceType": "Patient", "id": "ok2"}),
        orjson.dumps({"resourceType": "Patient", "id": "bad", "gender": "xyz"}),
        orjson.dumps({"resourceType": "Patient", "gender": "male"}),
        b"",
        orjson.dumps({"resourceType": "Patient", "id": "ok3"}),
    ]
    url = files.put(f"/{partition}/bad.ndjson", b"\n".join(lines) + b"\n")
    # When it is imported in ranges of 1 KiB
    result = run(
        s3_app_settings, database, object_store, partition, body(url, processingUnitBytesToRead="1024")
    )
    # Then three patients are stored and the error file names lines 2, 4 and 5
    assert result["output"] == [{"type": "Patient", "count": 3, "inputUrl": url}]
    [error] = result["error"]
    assert error["count"] == 3 and error["inputUrl"] == url and error["type"] == "OperationOutcome"
    outcomes = [orjson.loads(x) for x in b"".join(object_store.get_stream(error["key"])).splitlines()]
    numbers = [o["extension"][0]["extension"][1]["valueInteger"] for o in outcomes]
    assert numbers == [2, 4, 5]
    assert "not valid JSON" in outcomes[0]["issue"][0]["diagnostics"]
    assert all(url in o["issue"][0]["diagnostics"] for o in outcomes)
    assert sorted(r[0] for r in stored(database, partition)) == ["ok1", "ok2", "ok3"]


def test_a_retried_range_and_a_second_identical_import_add_no_resource_and_no_version(
    files: FileServer,
    s3_app_settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
):
    # Given a file of 30 patients in several ranges
    url = files.put(f"/{partition}/p.ndjson", ndjson(patients(30, "Same")))
    request = body(url, processingUnitBytesToRead="1024")
    # When every range runs twice, and then the whole import runs again
    first = run(s3_app_settings, database, object_store, partition, request, repeat=range(100))
    after_first = stored(database, partition)
    second = run(s3_app_settings, database, object_store, partition, request)
    # Then there are 30 resources, each version 1, before and after
    assert len(after_first) == 30 and {r[1] for r in after_first} == {1}
    assert stored(database, partition) == after_first
    assert first["output"][0]["count"] == second["output"][0]["count"] == 30
    assert second["totals"]["unchanged"] == 30


def test_gzip_inputs_from_s3_import_and_an_empty_file_reports_a_warning(
    s3_app_settings: Settings, database: Database, object_store: S3ObjectStore, partition: str
):
    # Given a gzip file (without a .gz name) and an empty file in the partition's own prefix
    key = f"bulkhead/{partition}/uploads/data.ndjson"
    object_store.put_bytes(key, gzip.compress(ndjson(patients(25, "Zipped"))))
    empty = f"bulkhead/{partition}/uploads/empty.ndjson"
    object_store.put_bytes(empty, b"")
    bucket = object_store.bucket
    # When both are imported
    result = run(
        s3_app_settings,
        database,
        object_store,
        partition,
        body(f"s3://{bucket}/{key}", f"s3://{bucket}/{empty}", processingUnitBytesToRead="1024"),
    )
    # Then the 25 patients are stored and the empty file has a count of 0 and a warning
    assert result["output"] == [
        {"type": "Patient", "count": 25, "inputUrl": f"s3://{bucket}/{key}"},
        {"type": "Patient", "count": 0, "inputUrl": f"s3://{bucket}/{empty}"},
    ]
    [warning] = result["error"]
    text_ = b"".join(object_store.get_stream(warning["key"])).decode()
    assert "is empty" in text_ and '"severity":"warning"' in text_


def test_a_missing_file_and_a_changed_etag_fail_the_import_before_anything_is_stored(
    files: FileServer,
    s3_app_settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
):
    # Given a missing file and a file whose entity tag is not the one requested
    url = files.put(f"/{partition}/x.ndjson", ndjson(patients(3, "X")))
    missing = files.base_url + f"/{partition}/nothing.ndjson"
    changed = body(url)
    changed["parameter"][1]["part"].append({"name": "etag", "valueString": '"not-the-etag"'})
    # When each is imported / Then planning fails with the reason, and nothing is stored
    with pytest.raises(InvalidRequest, match=r"^input 0 could not be read: not found$"):
        run(s3_app_settings, database, object_store, partition, body(missing))
    with pytest.raises(PermanentJobError, match="changed"):
        run(s3_app_settings, database, object_store, partition, changed)
    assert stored(database, partition) == []
    # And with the right entity tag it imports
    right = body(url)
    right["parameter"][1]["part"].append(
        {"name": "etag", "valueString": files.etag(f"/{partition}/x.ndjson")}
    )
    assert run(s3_app_settings, database, object_store, partition, right)["output"][0]["count"] == 3


def test_a_server_without_range_support_still_gives_every_line_once(
    files: FileServer,
    s3_app_settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
):
    # Given a server that ignores Range headers
    url = files.put(f"/{partition}/nr.ndjson", ndjson(patients(35, "NoRange")))
    files.ranges = False
    try:
        # When the file is imported in 1 KiB ranges
        result = run(
            s3_app_settings, database, object_store, partition, body(url, processingUnitBytesToRead="1024")
        )
    finally:
        files.ranges = True
    # Then all 35 are there once
    assert result["output"][0]["count"] == 35
    assert len(stored(database, partition)) == 35


def test_an_input_under_another_partitions_prefix_in_bulkheads_bucket_is_refused(
    s3_app_settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
):
    # Given a file under the other partition's prefix (for example its export output)
    key = f"bulkhead/{other_partition}/job/Patient-1.ndjson"
    object_store.put_bytes(key, ndjson(patients(2, "Secret")))
    # When this partition names it as an input / Then it is refused, and nothing is stored
    with pytest.raises(InputUnreadable, match=r"^input 0 could not be read: not allowed$"):
        run(s3_app_settings, database, object_store, partition, body(f"s3://{object_store.bucket}/{key}"))
    assert stored(database, partition) == []


def test_a_trusted_import_defers_indexing_and_says_so(
    files: FileServer,
    s3_app_settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    monkeypatch: pytest.MonkeyPatch,
):
    # Given a valid file / When imported with validation none
    sender = RecordingSender()
    monkeypatch.setattr(service, "outbox_for", lambda _settings: sender)
    url = files.put(f"/{partition}/t.ndjson", ndjson(patients(5, "Trusted")))
    result = run(s3_app_settings, database, object_store, partition, body(url, validation="none"))
    # Then the resources are stored without index rows, and a reindex of what it stored is queued
    assert result["output"][0]["count"] == 5
    assert result["indexing"]["deferred"] is True
    follow_up = service.status(
        database, partition, result["indexing"]["reindexJob"], caller=ANONYMOUS, kind="reindex"
    )
    assert follow_up.state == "queued" and [m.job_id for m in sender.sent] == [follow_up.id]
    with database.unit_of_work(partition) as uow:
        rows = uow.session.execute(text("SELECT count(*) FROM search_string")).scalar()
    assert rows == 0
