"""Seed synthetic resources into partitions fast: COPY straight into the resource table.

Used by ``bench/export.py``. Resources look like small clinical records (Patients and Observations that
point at them, about 0.6-1.2 KB each); ``big_resources`` writes DocumentReferences of several MB.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from storage.db import libpq_url

_BATCH = 20_000


def partition_id(conn: psycopg.Connection, name: str) -> int:
    """Return the id of partition ``name``, creating it if needed."""
    row = conn.execute(
        "INSERT INTO partition (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name "
        "RETURNING id",
        (name,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _patient(i: int, when: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Patient",
            "id": f"p{i}",
            "meta": {"versionId": "1", "lastUpdated": when},
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.3.25", "value": f"{i:09d}"}],
            "name": [{"use": "official", "family": f"Family{i % 997}", "given": [f"Given{i % 101}", "Q"]}],
            "telecom": [{"system": "phone", "value": f"555-{i % 10000:04d}", "use": "home"}],
            "gender": ("male", "female")[i % 2],
            "birthDate": f"{1940 + i % 70}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "address": [
                {
                    "line": [f"{i % 900 + 1} Main Street"],
                    "city": "Springfield",
                    "state": "MA",
                    "postalCode": f"{i % 99999:05d}",
                }
            ],
        }
    )


def _observation(i: int, patients: int, when: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "id": f"o{i}",
            "meta": {"versionId": "1", "lastUpdated": when},
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                "text": "Heart rate",
            },
            "subject": {"reference": f"Patient/p{i % max(patients, 1)}"},
            "effectiveDateTime": "2024-03-01T10:00:00Z",
            "valueQuantity": {
                "value": 60 + i % 60,
                "unit": "beats/minute",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
    )


def _narrated(raw: bytes) -> bytes:
    """Return the resource with a generated narrative, as most real resources have (quotes and all)."""
    resource = orjson.loads(raw)
    summary = ", ".join(f"{k}: {v}" for k, v in resource.items() if isinstance(v, str))
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Generated narrative</b></p>'
        f'<table class="grid"><tr><td>{summary}</td></tr></table></div>'
    )
    return orjson.dumps({**resource, "text": {"status": "generated", "div": div}})


def _copy_line(pid: int, rtype: str, rid: str, when: datetime, raw: bytes) -> bytes:
    text = raw.replace(b"\\", b"\\\\")
    return b"%d\t%s\t%s\t1\t%s\tf\tf\t%s\n" % (
        pid,
        rtype.encode(),
        rid.encode(),
        when.isoformat().encode(),
        text,
    )


def _rows(pid: int, count: int, when: datetime, narrative: bool) -> Iterator[bytes]:
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    patients = max(count // 10, 1)
    dress = _narrated if narrative else bytes
    for i in range(count):
        if i < patients:
            yield _copy_line(pid, "Patient", f"p{i}", when, dress(_patient(i, stamp)))
        else:
            yield _copy_line(pid, "Observation", f"o{i}", when, dress(_observation(i, patients, stamp)))


def _copy(conn: psycopg.Connection, lines: Iterator[bytes]) -> None:
    sql = (
        "COPY resource (partition_id, resource_type, resource_id, version, last_updated, is_deleted, "
        "is_history, raw) FROM STDIN"
    )
    with conn.cursor() as cur, cur.copy(sql) as copy:
        batch: list[bytes] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= _BATCH:
                copy.write(b"".join(batch))
                batch.clear()
        if batch:
            copy.write(b"".join(batch))


def seed(
    database_url: str,
    partition: str,
    count: int,
    *,
    when: datetime | None = None,
    narrative: bool = False,
) -> int:
    """Write ``count`` resources (10% Patients, 90% Observations) into ``partition``; return its id.

    With ``narrative`` each has a generated XHTML narrative (``text.div``), whose quotes are escaped in JSON.
    """
    when = when or datetime.now(UTC) - timedelta(minutes=1)
    with psycopg.connect(libpq_url(database_url)) as conn:
        pid = partition_id(conn, partition)
        _copy(conn, _rows(pid, count, when, narrative))
        conn.commit()
        conn.execute("ANALYZE resource")
        conn.commit()
    return pid


def big_resources(database_url: str, partition: str, count: int, size: int) -> int:
    """Write ``count`` DocumentReferences of about ``size`` bytes each into ``partition``."""
    when = datetime.now(UTC) - timedelta(minutes=1)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    with psycopg.connect(libpq_url(database_url)) as conn:
        pid = partition_id(conn, partition)

        def lines() -> Iterator[bytes]:
            for i in range(count):
                raw = orjson.dumps(
                    {
                        "resourceType": "DocumentReference",
                        "id": f"d{i}",
                        "meta": {"versionId": "1", "lastUpdated": stamp},
                        "status": "current",
                        "content": [{"attachment": {"contentType": "application/pdf", "data": data}}],
                    }
                )
                yield _copy_line(pid, "DocumentReference", f"d{i}", when, raw)

        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY resource (partition_id, resource_type, resource_id, version, last_updated, is_deleted, "
                "is_history, raw) FROM STDIN"
            ) as copy,
        ):
            for line in lines():
                copy.write(line)
        conn.commit()
    return pid
