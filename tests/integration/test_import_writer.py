"""The import merge writer against real PostgreSQL: versions, idempotency, races, partitions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text

from core.importrows import ImportRecord, build_record
from core.importspec import INCREMENTAL, INITIAL
from storage import Database
from storage.importwrite import ImportWriter, Written, import_watermark

JOB = datetime(2025, 6, 1, tzinfo=UTC)


def records(resources: list[dict[str, Any]], mode: str = INCREMENTAL) -> list[ImportRecord]:
    """Build import records from resources, one line each."""
    return [
        build_record(n * 100, orjson.dumps(r), mode=mode, validation="structural")
        for n, r in enumerate(resources)
    ]


def write(
    db: Database,
    partition: str,
    recs: list[ImportRecord],
    *,
    mode: str = INCREMENTAL,
    watermark: int | None = None,
) -> list[Written]:
    """Write one batch in its own transaction."""
    with db.unit_of_work(partition) as uow:
        mark = import_watermark(uow) if watermark is None else watermark
        out = ImportWriter(uow, mode=mode, watermark=mark, job_time=JOB).write(recs)
        uow.commit()
    return out


def versions(db: Database, partition: str) -> list[tuple[str, str, int, bool, str]]:
    """Return (type, id, version, is_history, raw) of every stored version in the partition."""
    with db.unit_of_work(partition) as uow:
        rows = uow.session.execute(
            text(
                "SELECT resource_type, resource_id, version, is_history, raw FROM resource"
                " ORDER BY resource_type, resource_id, version"
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def patients(n: int, **extra: Any) -> list[dict[str, Any]]:
    """Return ``n`` patients with ids p0..p(n-1)."""
    return [{"resourceType": "Patient", "id": f"p{i}", "gender": "male", **extra} for i in range(n)]


def test_an_import_into_one_partition_leaves_the_same_ids_in_another_untouched(
    database: Database, partition: str, other_partition: str
):
    # Given the same ids stored in the other partition
    write(database, other_partition, records(patients(3, active=False)))
    before = versions(database, other_partition)
    # When they are imported into this partition
    out = write(database, partition, records(patients(3, active=True)))
    # Then this partition holds version 1 of each and the other partition is unchanged
    assert [w.outcome for w in out] == ["created"] * 3
    assert [(t, i, v) for t, i, v, _h, _r in versions(database, partition)] == [
        ("Patient", f"p{i}", 1) for i in range(3)
    ]
    assert versions(database, other_partition) == before


def test_writing_the_same_batch_again_creates_no_rows_and_no_versions(database: Database, partition: str):
    # Given a batch written once under a watermark
    with database.unit_of_work(partition) as uow:
        mark = import_watermark(uow)
    write(database, partition, records(patients(5)), watermark=mark)
    first = versions(database, partition)
    # When the same batch is written again (a retried chunk) and by a later import (a new watermark)
    again = write(database, partition, records(patients(5)), watermark=mark)
    later = write(database, partition, records(patients(5)))
    # Then nothing changed
    assert {w.outcome for w in again} == {"unchanged"}
    assert {w.outcome for w in later} == {"unchanged"}
    assert versions(database, partition) == first


def test_incremental_versions_from_the_file_are_kept_and_the_highest_is_current(
    database: Database, partition: str
):
    # Given versions 3, 1 and 2 of one patient, in that order, in two batches
    def v(n: int) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "id": "a",
            "birthDate": f"200{n}",
            "meta": {"versionId": str(n), "lastUpdated": f"2020-0{n}-01T00:00:00Z"},
        }

    write(database, partition, records([v(3)]))
    write(database, partition, records([v(1), v(2)]))
    # When the versions are read back
    rows = versions(database, partition)
    # Then all three exist, only 3 is current, and the stored bytes carry the file's meta
    assert [(ver, hist) for _t, _i, ver, hist, _r in rows] == [(1, True), (2, True), (3, False)]
    assert orjson.loads(rows[2][4])["meta"] == {"versionId": "3", "lastUpdated": "2020-03-01T00:00:00Z"}


def test_initial_load_refuses_to_change_an_existing_resource(database: Database, partition: str):
    # Given a patient stored before the import
    write(database, partition, records([{"resourceType": "Patient", "id": "x", "gender": "female"}]))
    # When an InitialLoad brings other content for it and a new patient
    out = write(
        database,
        partition,
        records(
            [
                {"resourceType": "Patient", "id": "x", "gender": "male"},
                {"resourceType": "Patient", "id": "y"},
            ],
            INITIAL,
        ),
        mode=INITIAL,
    )
    # Then the existing one is an error and unchanged, the new one is created
    assert [w.outcome for w in out] == ["error", "created"]
    assert "InitialLoad only creates" in out[0].reason
    assert orjson.loads(versions(database, partition)[0][4])["gender"] == "female"


def test_workers_racing_on_the_same_ids_store_each_version_once_with_the_ranked_winner(
    database: Database, partition: str
):
    # Given a shared watermark and four workers, each with a differently ordered batch of conflicting lines
    with database.unit_of_work(partition) as uow:
        mark = import_watermark(uow)
    lines = [
        {
            "resourceType": "Patient",
            "id": f"r{i}",
            "gender": g,
            "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
        }
        for i in range(40)
        for g in ("male", "female", "other")
    ]
    batches = [lines, lines[::-1], lines[1::2] + lines[::2], lines[::3] + lines]
    errors: list[BaseException] = []

    def run(batch: list[dict[str, Any]]) -> None:
        try:
            write(database, partition, records(batch), watermark=mark)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    # When they write at the same time
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then each patient has exactly one version, holding the same winner a lone writer picks
    assert not errors
    rows = versions(database, partition)
    assert len(rows) == 40 and all(v == 1 and not h for _t, _i, v, h, _r in rows)
    alone = f"{partition}-alone"
    write(database, alone, records(lines))
    assert [r[4] for r in versions(database, alone)] == [r[4] for r in rows]


def test_validated_imports_are_searchable_and_trusted_ones_are_not_indexed(
    database: Database, partition: str
):
    # Given one patient written with indexing and one without
    with database.unit_of_work(partition) as uow:
        mark = import_watermark(uow)
        ImportWriter(uow, mode=INCREMENTAL, watermark=mark, job_time=JOB).write(
            records([{"resourceType": "Patient", "id": "idx", "gender": "female"}])
        )
        ImportWriter(uow, mode=INCREMENTAL, watermark=mark, job_time=JOB, index=False).write(
            records([{"resourceType": "Patient", "id": "raw", "gender": "female"}])
        )
        uow.commit()
        # When the token index is read
        rows = (
            uow.session.execute(
                text(
                    "SELECT r.resource_id FROM resource r"
                    " JOIN search_token t ON t.surrogate_id = r.surrogate_id WHERE t.param = 'gender'"
                )
            )
            .scalars()
            .all()
        )
    # Then only the indexed one is there
    assert rows == ["idx"]
