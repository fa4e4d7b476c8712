"""The bulk indexing API (index_rows_for + write_index_rows) that import, reindex and seeding use."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import func, select

from storage import Database
from storage.search import (
    IndexRows,
    index_rows_for,
    matching_surrogate_ids,
    unindex_resources,
    write_index_rows,
)
from storage.search.tables import token_index


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"bulk{i}",
        "identifier": [{"system": "urn:bulk", "value": str(i)}],
        "name": [{"family": f"Bulk{i % 7}", "given": ["A", "B"]}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{1940 + i % 60}-03-04",
        "address": [{"city": "Town", "state": "ST", "postalCode": "12345", "line": ["1 Road"]}],
        "telecom": [{"system": "phone", "value": f"555-{i:04d}"}],
    }


def test_a_large_batch_written_through_staging_under_row_level_security_is_searchable(
    database: Database, partition: str
) -> None:
    # Given 200 stored patients whose index rows were removed (as before a reindex)
    with database.unit_of_work(partition) as uow:
        stored = []
        for i in range(200):
            body = patient(i)
            raw = orjson.dumps(body)
            stored.append(
                uow.resources.write(
                    "Patient", body["id"], lambda _v, _t, raw=raw, body=body: (raw, body), previous=None
                )
            )
        pid = uow.resources.partition_id()
        assert pid is not None
        sids = [s.surrogate_id for s in stored]
        unindex_resources(uow.session, sids)
        query = [("identifier", "urn:bulk|")]
        assert list(uow.session.scalars(matching_surrogate_ids(uow.session, pid, "Patient", query))) == []
        # When their rows are extracted into one batch and written at once (big enough for the COPY path)
        batch = IndexRows()
        for sid, i in zip(sids, range(200), strict=True):
            index_rows_for("Patient", sid, pid, patient(i), into=batch)
        assert sum(len(r) * len(r[0]) for r in batch.by_table.values() if r) > 20_000
        written = write_index_rows(uow.session, batch)
        # Then every row is there and every patient is found again, by each kind of parameter
        assert written == len(batch)
        tokens = uow.session.scalar(
            select(func.count()).select_from(token_index).where(token_index.c.partition_id == pid)
        )
        assert tokens == len(batch.by_table["token"])
        for criteria, expected in (
            ([("identifier", "urn:bulk|")], 200),
            ([("family", "bulk3")], len([i for i in range(200) if i % 7 == 3])),
            (
                [("gender", "female"), ("birthdate", "ge1990")],
                len([i for i in range(200) if i % 2 and i % 60 >= 50]),
            ),
            ([("phone", "555-0042")], 1),
        ):
            found = list(uow.session.scalars(matching_surrogate_ids(uow.session, pid, "Patient", criteria)))
            assert len(found) == expected, criteria
        uow.commit()
