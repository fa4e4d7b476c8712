"""Import rules without a database: the Parameters body, line checks and the version decisions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from core.errors import InvalidRequest
from core.importrows import Existing, ImportRecord, LineError, build_record, decide
from core.importspec import INCREMENTAL, INITIAL, ImportSpec, parse_import

T0 = datetime(2024, 1, 1, tzinfo=UTC)
JOB = datetime(2025, 6, 1, tzinfo=UTC)


def body(*params: dict[str, Any]) -> dict[str, Any]:
    """Return a Parameters body."""
    return {"resourceType": "Parameters", "parameter": list(params)}


def input_param(url: str, rtype: str | None = "Patient", **extra: str) -> dict[str, Any]:
    """Return one input parameter."""
    parts = [{"name": "url", "valueUrl": url}]
    if rtype:
        parts.append({"name": "type", "valueCode": rtype})
    parts += [{"name": k, "valueString": v} for k, v in extra.items()]
    return {"name": "input", "part": parts}


FORMAT = {"name": "inputFormat", "valueCode": "application/fhir+ndjson"}


def test_a_microsoft_style_body_parses_with_any_primitive_value_type():
    # Given a body using valueString, valueCode and valueUri interchangeably
    spec = parse_import(
        body(
            {"name": "inputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "mode", "valueCode": "InitialLoad"},
            {"name": "inputSource", "valueUri": "https://example.org/source"},
            {"name": "storageDetail", "part": [{"name": "type", "valueString": "https"}]},
            input_param("https://files.example.org/a.ndjson", etag='W/"abc"'),
            input_param("s3://bucket/b.ndjson.gz", None),
        )
    )
    # Then every part is read, the etag is unquoted, and the spec round-trips through JSON
    assert spec.mode == INITIAL
    assert [i.url for i in spec.inputs] == ["https://files.example.org/a.ndjson", "s3://bucket/b.ndjson.gz"]
    assert spec.inputs[0].etag == "abc" and spec.inputs[1].type is None
    assert ImportSpec.from_json(orjson.loads(orjson.dumps(spec.to_json()))) == spec
    assert spec.validation == "full" and spec.input_source == "https://example.org/source"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([input_param("s3://bkt/k")], "inputFormat is required"),
        ([{"name": "inputFormat", "valueCode": "text/csv"}, input_param("s3://bkt/k")], "not supported"),
        ([FORMAT], "at least one input"),
        ([FORMAT, input_param("ftp://host/file")], "s3://bucket/key"),
        ([FORMAT, input_param("s3://bucket")], "s3://bucket/key"),
        ([FORMAT, input_param("s3://bulkhead:443/k")], "s3://bucket/key"),
        ([FORMAT, input_param("s3://x@bulkhead/k")], "s3://bucket/key"),
        ([FORMAT, input_param("s3://bkt/k", "Patientt")], "not an R4 resource type"),
        ([FORMAT, input_param("s3://bkt/k"), input_param("s3://bkt/k")], "more than once"),
        ([FORMAT, {"name": "mode", "valueCode": "Replace"}, input_param("s3://bkt/k")], "InitialLoad"),
        ([FORMAT, {"name": "validation", "valueCode": "some"}, input_param("s3://bkt/k")], "validation"),
        ([FORMAT, {"name": "colour", "valueCode": "x"}, input_param("s3://bkt/k")], "Unknown"),
        ([FORMAT, {"name": "input", "part": [{"name": "type", "valueCode": "Patient"}]}], "needs a url"),
    ],
)
def test_bad_import_bodies_are_refused_with_the_reason(params: list[dict[str, Any]], message: str):
    with pytest.raises(InvalidRequest, match=message):
        parse_import(body(*params))


def line(resource: dict[str, Any]) -> bytes:
    """Serialise a resource as one NDJSON line."""
    return orjson.dumps(resource)


def record(resource: dict[str, Any], mode: str = INCREMENTAL, validation: str = "structural") -> ImportRecord:
    """Build an import record from a resource."""
    return build_record(0, line(resource), mode=mode, validation=validation)


def test_lines_without_an_id_or_with_a_bad_reference_or_broken_json_are_refused():
    with pytest.raises(LineError, match="no id"):
        record({"resourceType": "Patient"})
    with pytest.raises(LineError, match="not a valid reference"):
        record(
            {
                "resourceType": "Observation",
                "id": "o",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "patient 1"},
            }
        )
    with pytest.raises(LineError, match="not valid JSON"):
        build_record(0, b'{"resourceType": "Patient",', mode=INCREMENTAL, validation="none")
    with pytest.raises(LineError, match="does not match"):
        build_record(
            0,
            line({"resourceType": "Patient", "id": "a"}),
            mode=INCREMENTAL,
            validation="none",
            expected_type="Observation",
        )


def test_trusted_mode_checks_only_what_storage_needs():
    # Given a patient with an unknown gender code / When imported without validation / Then it passes
    rec = record({"resourceType": "Patient", "id": "a", "gender": "xyz"}, validation="none")
    assert rec.resource_id == "a"


def test_input_source_fills_meta_source_only_when_absent():
    rec = build_record(
        0,
        line({"resourceType": "Patient", "id": "a"}),
        mode=INCREMENTAL,
        validation="none",
        input_source="urn:src",
    )
    kept = build_record(
        0,
        line({"resourceType": "Patient", "id": "a", "meta": {"source": "mine"}}),
        mode=INCREMENTAL,
        validation="none",
        input_source="urn:src",
    )
    assert rec.resource["meta"]["source"] == "urn:src"
    assert kept.resource["meta"]["source"] == "mine"


def no_load(_row: Existing) -> bytes | None:
    """Fail: the decision should have had the bytes already."""
    raise AssertionError("unexpected load")


def test_initial_load_creates_version_one_and_leaves_an_existing_resource_alone():
    # Given a resource stored before the import with other content
    rec = record({"resourceType": "Patient", "id": "a", "active": True}, mode=INITIAL)
    stored = Existing(3, T0, False, False, True, 10, line({"resourceType": "Patient", "id": "a"}))
    # When decided / Then the line is an error and nothing changes
    assert decide(rec, [stored], mode=INITIAL, job_time=JOB, load=no_load).kind == "error"
    # And into an empty place it is version 1 at the job's time
    new = decide(rec, [], mode=INITIAL, job_time=JOB, load=no_load)
    assert (new.kind, new.version, new.last_updated, new.current) == ("insert", 1, JOB, True)
    assert orjson.loads(new.raw)["meta"] == {"versionId": "1", "lastUpdated": "2025-06-01T00:00:00.000Z"}


def test_incremental_load_keeps_the_files_version_and_time_and_files_older_versions_as_history():
    # Given version 5 stored before the import
    current = Existing(5, T0, False, False, True, 10, line({"resourceType": "Patient", "id": "a"}))
    older = record(
        {
            "resourceType": "Patient",
            "id": "a",
            "meta": {"versionId": "2", "lastUpdated": "2020-01-01T00:00:00Z"},
        }
    )
    newer = record(
        {
            "resourceType": "Patient",
            "id": "a",
            "active": True,
            "meta": {"versionId": "7", "lastUpdated": "2024-05-01T00:00:00Z"},
        }
    )
    rows = [current]
    # When version 2 and version 7 arrive
    d2 = decide(older, rows, mode=INCREMENTAL, job_time=JOB, load=no_load)
    d7 = decide(newer, rows, mode=INCREMENTAL, job_time=JOB, load=no_load)
    # Then 2 is history, 7 becomes current and demotes 5, and the line's bytes are kept as they were
    assert (d2.kind, d2.current, d2.demote) == ("insert", False, None)
    assert (d7.kind, d7.current, d7.demote) == ("insert", True, current)
    assert d7.raw == newer.line
    assert d7.last_updated == datetime(2024, 5, 1, tzinfo=UTC)


def test_a_line_without_version_equal_to_the_stored_resource_stores_nothing():
    # Given the stored version 4 and the same content without meta
    stored = Existing(
        4,
        T0,
        False,
        False,
        True,
        10,
        line(
            {
                "resourceType": "Patient",
                "id": "a",
                "meta": {"versionId": "4", "lastUpdated": "2024-01-01T00:00:00Z"},
                "active": True,
            }
        ),
    )
    rec = record({"resourceType": "Patient", "id": "a", "active": True})
    # When decided / Then unchanged; with other content it is version 5
    assert decide(rec, [stored], mode=INCREMENTAL, job_time=JOB, load=no_load).kind == "unchanged"
    other = record({"resourceType": "Patient", "id": "a", "active": False})
    d = decide(other, [stored], mode=INCREMENTAL, job_time=JOB, load=no_load)
    assert (d.kind, d.version, d.current) == ("insert", 5, True)


def test_a_retried_batch_stores_nothing_new():
    # Given a line the first attempt stored (after the watermark)
    rec = record({"resourceType": "Patient", "id": "a", "active": True})
    first = decide(rec, [], mode=INCREMENTAL, job_time=JOB, load=no_load)
    stored = Existing(first.version, JOB, False, False, False, 99, first.raw)
    # When the same line is decided again / Then nothing happens
    again = record({"resourceType": "Patient", "id": "a", "active": True})
    assert decide(again, [stored], mode=INCREMENTAL, job_time=JOB, load=no_load).kind == "unchanged"


def test_a_pre_existing_version_with_other_content_is_an_error_not_a_rewrite_of_history():
    stored = Existing(2, T0, True, False, True, 10, line({"resourceType": "Patient", "id": "a"}))
    rec = record({"resourceType": "Patient", "id": "a", "active": True, "meta": {"versionId": "2"}})
    decision = decide(rec, [stored], mode=INCREMENTAL, job_time=JOB, load=no_load)
    assert decision.kind == "error" and "exists already" in decision.reason


@pytest.mark.parametrize("mode", [INITIAL, INCREMENTAL])
def test_duplicate_ids_resolve_to_the_same_winner_whatever_the_order(mode: str):
    # Given three lines for the same resource version with different content and times
    lines = [
        {
            "resourceType": "Patient",
            "id": "d",
            "gender": "male",
            "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
        },
        {
            "resourceType": "Patient",
            "id": "d",
            "gender": "female",
            "meta": {"lastUpdated": "2024-03-01T00:00:00Z"},
        },
        {
            "resourceType": "Patient",
            "id": "d",
            "gender": "other",
            "meta": {"lastUpdated": "2024-03-01T00:00:00Z"},
        },
    ]
    winners = set()
    # When they meet in every order, each time in a batch that may already hold the earlier ones
    for order in itertools.permutations(lines):
        rows: list[Existing] = []
        for resource in order:
            decision = decide(record(resource, mode), rows, mode=mode, job_time=JOB, load=no_load)
            if decision.kind == "replace":
                assert decision.target is not None
            assert decision.kind != "error"
        current = [r for r in rows if not r.is_history]
        assert len(rows) == 1 and len(current) == 1
        winners.add(orjson.loads(current[0].raw or b"")["gender"])
    # Then the winner is always the same line: the latest lastUpdated, then the larger hash
    assert len(winners) == 1
    assert winners <= {"female", "other"}
