"""The export planner and processor against real PostgreSQL and S3, without the job queue in between.

Each test plans an export, runs every processing job in-process, finishes the manifest and reads the objects
back from S3: partition isolation, snapshot semantics, counts, rollover, deletions and _elements.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient

from core.exportspec import ExportSpec
from orchestrator import export as export_planner
from storage import Database
from storage.bulkwrite import stamp_new, write_new_resources
from storage.export import planning as export_planning
from storage.export.planning import plan_ranges
from storage.export.reader import ExportWindow, partition_id
from storage.instants import write_instant
from tests.support.exported import run_export
from tests.support.fhir import base, put


def test_export_of_one_partition_never_contains_another_partitions_resources(
    client: FlaskClient, partition: str, other_partition: str, ctx_for: Any
) -> None:
    # Given Patient/1 and Observation/1 in both partitions, with different content
    for p, gender in ((partition, "female"), (other_partition, "male")):
        put(client, f"{base(p)}/Patient/1", {"resourceType": "Patient", "id": "1", "gender": gender})
        put(
            client,
            f"{base(p)}/Observation/1",
            {"resourceType": "Observation", "id": "1", "status": "final", "code": {"text": gender}},
        )
    # When partition A is exported
    result, lines = run_export(ctx_for(partition))
    # Then only A's resources are in the files, each exactly once
    patients = [orjson.loads(x) for x in lines["Patient"]]
    assert [p["gender"] for p in patients] == ["female"]
    assert [orjson.loads(x)["code"]["text"] for x in lines["Observation"]] == ["female"]
    assert result["resources"] == 2
    assert all(f"/{partition}/" in e["key"] for e in result["output"])


def test_exported_lines_are_the_stored_bytes_of_the_latest_version_without_deleted_resources(
    client: FlaskClient, partition: str, ctx_for: Any
) -> None:
    # Given a Patient updated twice, one deleted, and a decimal with a trailing zero
    put(client, f"{base(partition)}/Patient/a", {"resourceType": "Patient", "id": "a", "gender": "male"})
    put(client, f"{base(partition)}/Patient/a", {"resourceType": "Patient", "id": "a", "gender": "other"})
    put(client, f"{base(partition)}/Patient/b", {"resourceType": "Patient", "id": "b"})
    client.delete(f"{base(partition)}/Patient/b")
    body = (
        b'{"resourceType":"Observation","id":"o","status":"final","code":{"text":"t"},'
        b'"valueQuantity":{"value":72.50}}'
    )
    client.put(
        f"{base(partition)}/Observation/o", data=body, headers={"Content-Type": "application/fhir+json"}
    )
    stored = client.get(f"{base(partition)}/Observation/o").data
    # When the partition is exported
    _, lines = run_export(ctx_for(partition))
    # Then the latest version only, no deleted resource, and byte-identical stored JSON
    assert [orjson.loads(x)["gender"] for x in lines["Patient"]] == ["other"]
    assert lines["Observation"] == [stored]


def test_an_empty_or_unknown_partition_exports_no_files(ctx_for: Any) -> None:
    result, lines = run_export(ctx_for(f"e-{secrets.token_hex(4)}"))
    assert result["output"] == [] and lines == {}


def test_versions_written_after_the_snapshot_are_left_for_the_next_since_export(
    client: FlaskClient, partition: str, ctx_for: Any
) -> None:
    # Given two Patients, then a snapshot instant T
    put(client, f"{base(partition)}/Patient/a", {"resourceType": "Patient", "id": "a", "gender": "male"})
    put(client, f"{base(partition)}/Patient/b", {"resourceType": "Patient", "id": "b", "gender": "male"})
    snapshot = datetime.now(UTC)
    # When, after T but before the export reads, a is updated, b deleted and c created
    put(client, f"{base(partition)}/Patient/a", {"resourceType": "Patient", "id": "a", "gender": "female"})
    client.delete(f"{base(partition)}/Patient/b")
    put(client, f"{base(partition)}/Patient/c", {"resourceType": "Patient", "id": "c"})
    result, lines = run_export(ctx_for(partition), at=snapshot)
    # Then the export holds the state at T: a as it was, b still alive, no c
    first = {orjson.loads(x)["id"]: orjson.loads(x) for x in lines["Patient"]}
    assert sorted(first) == ["a", "b"] and first["a"]["gender"] == "male"
    # And a follow-up with _since=transactionTime holds exactly the changes after T
    _, later = run_export(ctx_for(partition), ExportSpec(since=result["transactionTime"]))
    second = {orjson.loads(x)["id"]: orjson.loads(x) for x in later.get("Patient", [])}
    assert sorted(second) == ["a", "c"] and second["a"]["gender"] == "female"
    deleted = [orjson.loads(x) for x in later["Bundle"]]
    assert [d["entry"][0]["request"] for d in deleted] == [{"method": "DELETE", "url": "Patient/b"}]


def test_files_roll_over_at_the_size_limit_and_counts_stay_exact(
    client: FlaskClient, partition: str, ctx_for: Any
) -> None:
    # Given 30 Patients and a file limit of about three resources
    for i in range(30):
        put(client, f"{base(partition)}/Patient/p{i}", {"resourceType": "Patient", "id": f"p{i}"})
    # When exported with small files and small processing jobs
    result, lines = run_export(ctx_for(partition, export_file_max_bytes=300, export_chunk_bytes=2000))
    # Then there are many files, none above the limit, and every Patient is there once
    assert len(result["output"]) > 5
    assert all(e["size"] <= 300 for e in result["output"])
    ids = sorted(orjson.loads(x)["id"] for x in lines["Patient"])
    assert ids == sorted(f"p{i}" for i in range(30))
    assert sum(e["count"] for e in result["output"]) == 30


def test_elements_trims_resources_and_tags_them_subsetted(
    client: FlaskClient, partition: str, ctx_for: Any
) -> None:
    put(
        client,
        f"{base(partition)}/Patient/a",
        {"resourceType": "Patient", "id": "a", "gender": "male", "birthDate": "1970-01-01"},
    )
    _, lines = run_export(
        ctx_for(partition), ExportSpec(types=("Patient",), elements={"Patient": ["gender"]})
    )
    patient = orjson.loads(lines["Patient"][0])
    assert patient["gender"] == "male" and "birthDate" not in patient
    assert patient["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_lenient_notes_become_informational_outcomes_in_the_error_files(partition: str, ctx_for: Any) -> None:
    result, lines = run_export(ctx_for(partition), ExportSpec(notes=("Ignored: _foo",)))
    outcome = orjson.loads(lines["OperationOutcome"][0])
    assert outcome["issue"][0]["severity"] == "information" and "_foo" in outcome["issue"][0]["diagnostics"]
    assert result["error"][0]["count"] == 1


def test_a_type_whose_first_rows_commit_while_the_snapshot_settles_is_still_exported(
    client: FlaskClient, partition: str, ctx_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a partition with Patients only, and a snapshot instant T
    put(client, f"{base(partition)}/Patient/a", {"resourceType": "Patient", "id": "a"})
    snapshot = datetime.now(UTC)
    real_settle = export_planner.settle

    def settle_with_a_late_commit(when: str, database: Database, name: str, seconds: float) -> None:
        # When the first Observation, stamped at T, commits while the planner waits for the snapshot to settle
        stamped = stamp_new(
            {"resourceType": "Observation", "id": "late", "status": "final", "code": {"text": "x"}}, snapshot
        )
        write_new_resources(database, name, [stamped], index=False)
        real_settle(when, database, name, seconds)

    monkeypatch.setattr(export_planner, "settle", settle_with_a_late_commit)
    _, lines = run_export(ctx_for(partition), at=snapshot)
    # Then it is in the export with the Patient
    assert [orjson.loads(x)["id"] for x in lines["Observation"]] == ["late"]
    assert [orjson.loads(x)["id"] for x in lines["Patient"]] == ["a"]


def test_a_write_stamped_before_the_snapshot_but_stalled_past_the_settle_time_is_still_exported(
    client: FlaskClient, database: Database, partition: str, ctx_for: Any
) -> None:
    # Given a partition, and a writer that takes its time stamp, then stalls (for far longer than the settle
    # time) before it writes anything
    put(client, f"{base(partition)}/Patient/a", {"resourceType": "Patient", "id": "a"})
    stamped, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def stalled_writer() -> None:
        try:
            with database.unit_of_work(partition) as uow:
                when = write_instant(uow.session)
                stamped.set()
                release.wait(10)
                body = {"resourceType": "Patient", "id": "late"}
                uow.resources.write(
                    "Patient",
                    "late",
                    lambda v, t: (orjson.dumps({**body, "meta": {"versionId": str(v)}}), body),
                    previous=None,
                    last_updated=when,
                )
                uow.commit()
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=stalled_writer)
    writer.start()
    assert stamped.wait(10)
    threading.Timer(1.0, release.set).start()
    time.sleep(0.01)  # the transaction time has millisecond precision: let it pass the stamp
    # When an export takes its snapshot after the stamp and plans while the writer still stalls
    _, lines = run_export(ctx_for(partition, export_settle_seconds=0.05), at=datetime.now(UTC))
    writer.join(10)
    # Then the planner waited for the writer, and its version (stamped before the snapshot) is exported
    assert not errors, errors
    assert sorted(orjson.loads(x)["id"] for x in lines["Patient"]) == ["a", "late"]


def test_planned_ranges_cover_every_live_row_once_in_contiguous_ranges_of_the_byte_budget(
    database: Database, partition: str
) -> None:
    # Given 300 Patients of about 250 bytes each
    now = datetime.now(UTC)
    people = [
        stamp_new({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": "F" * 200}]}, now)
        for i in range(300)
    ]
    write_new_resources(database, partition, people, index=False)
    # When ranges of about 8 KB are planned without a window and with a _since window that holds every row
    with database.unit_of_work(partition) as uow:
        pid = partition_id(uow, partition)
        assert pid is not None
        plans = [
            plan_ranges(uow, pid, ["Patient"], window, 2**62, chunk_bytes=8000, max_rows=1000)
            for window in (
                ExportWindow(snapshot=now),
                ExportWindow(snapshot=now, since=now - timedelta(days=1)),
            )
        ]
    # Then both plans count each row once, in contiguous ranges within the budget, of the same total size
    for ranges in plans:
        assert sum(r.rows for r in ranges) == 300
        assert ranges[0].low == 1 and all(a.high + 1 == b.low for a, b in pairwise(ranges))
        assert 6 <= len(ranges) <= 14
        assert all(r.bytes <= 8000 + 400 for r in ranges[:-1])
    sampled, exact = plans
    assert abs(sum(r.bytes for r in sampled) - sum(r.bytes for r in exact)) < 0.1 * sum(
        r.bytes for r in exact
    )


def test_a_partition_sized_from_a_page_sample_still_exports_every_resource_once_even_of_rare_types(
    database: Database, partition: str, other_partition: str, ctx_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 3,000 Patients and 3 Organizations, and planning that sizes from a sample of half the table's
    # pages as soon as it sees a single row (so that the rare type may well be missed by the sample)
    now = datetime.now(UTC)
    people = [
        stamp_new({"resourceType": "Patient", "id": f"p{i}", "gender": "other"}, now) for i in range(3000)
    ]
    orgs = [stamp_new({"resourceType": "Organization", "id": f"o{i}", "name": "x"}, now) for i in range(3)]
    write_new_resources(database, partition, people + orgs, index=False)
    # (and another partition holding the same Organization ids)
    theirs = [
        stamp_new({"resourceType": "Organization", "id": f"o{i}", "name": "theirs"}, now) for i in range(9)
    ]
    write_new_resources(database, other_partition, theirs, index=False)
    monkeypatch.setattr(export_planning, "SAMPLE_PERCENT", 50.0)
    monkeypatch.setattr(export_planning, "SAMPLE_MIN_ROWS", 1)
    # When the partition is exported in ranges of about 16 KB
    result, lines = run_export(
        ctx_for(partition, export_chunk_bytes=16_000), at=datetime.now(UTC) + timedelta(seconds=1)
    )
    # Then every resource is in the output exactly once
    exported = Counter(orjson.loads(x)["id"] for x in lines["Patient"] + lines["Organization"])
    assert exported == Counter([f"p{i}" for i in range(3000)] + [f"o{i}" for i in range(3)])
    assert sum(e["count"] for e in result["output"]) == 3003
    assert all(orjson.loads(x).get("name") != "theirs" for x in lines["Organization"])


def test_a_first_sample_too_small_to_size_from_is_taken_again_larger_and_every_resource_still_exports_once(
    database: Database, partition: str, ctx_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 3,000 Patients of about 1.9 KB each (about four to a page, so that page samples are steady),
    # and planning whose 5 % page sample must see 600 rows to be used
    now = datetime.now(UTC)
    people = [
        stamp_new({"resourceType": "Patient", "id": f"p{i}", "name": [{"text": secrets.token_hex(900)}]}, now)
        for i in range(3000)
    ]
    write_new_resources(database, partition, people, index=False)
    monkeypatch.setattr(export_planning, "SAMPLE_PERCENT", 5.0)
    monkeypatch.setattr(export_planning, "SAMPLE_MIN_ROWS", 600)
    monkeypatch.setattr(export_planning, "RESAMPLE_MIN_ROWS", 1)
    monkeypatch.setattr(export_planning, "RESAMPLE_MAX_PERCENT", 100.0)
    percents: list[float] = []
    sample_query = export_planning._sample_query

    def spy(percent: float) -> Any:
        percents.append(percent)
        return sample_query(percent)

    monkeypatch.setattr(export_planning, "_sample_query", spy)
    # When the partition is exported in ranges of about 1 MB
    result, lines = run_export(
        ctx_for(partition, export_chunk_bytes=1_000_000), at=datetime.now(UTC) + timedelta(seconds=1)
    )
    # Then the sample was taken twice, the second time larger
    assert len(percents) == 2 and percents[1] > percents[0] == 5.0
    # And every resource is in the output exactly once, in several ranges
    exported = Counter(orjson.loads(x)["id"] for x in lines["Patient"])
    assert exported == Counter(f"p{i}" for i in range(3000))
    assert len(result["output"]) > 1
