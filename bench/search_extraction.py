"""Benchmark search-index extraction: resources/s on one core, and rows written/s with COPY.

    python -m bench.search_extraction [--count 20000] [--database-url postgresql://...]

Resources look like the seed data (Patients with names, identifiers, addresses and telecoms; Encounters and
Observations that point at them). Extraction is pure Python (``index_rows_for``), measured in CPU time of
this process so that other load on the machine does not count. With ``--database-url`` the rows are also
written with ``write_index_rows`` (staged COPY) in a rolled-back transaction of partition ``bench-search``,
and resources/s of extraction plus write is printed.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from storage.search.index import IndexRows, index_rows_for

LOINC = [
    ("8867-4", "Heart rate", "/min"),
    ("8310-5", "Body temperature", "Cel"),
    ("29463-7", "Body weight", "kg"),
    ("8302-2", "Body height", "cm"),
    ("2339-0", "Glucose", "mg/dL"),
]


def patient(i: int, rng: random.Random) -> dict[str, Any]:
    """Return a realistic Patient."""
    return {
        "resourceType": "Patient",
        "id": f"p{i}",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.3.25", "value": f"{i:09d}"}],
        "active": True,
        "name": [{"use": "official", "family": f"Family{i % 997}", "given": [f"Given{i % 101}", "Q"]}],
        "telecom": [{"system": "phone", "value": f"555-{i % 10000:04d}", "use": "home"}],
        "gender": rng.choice(["male", "female"]),
        "birthDate": f"{1930 + i % 90}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "address": [
            {"line": [f"{i % 300} Main St"], "city": "Springfield", "state": "IL", "postalCode": "62701"}
        ],
    }


def encounter(i: int, pid: int) -> dict[str, Any]:
    """Return a realistic Encounter of patient ``pid``."""
    return {
        "resourceType": "Encounter",
        "id": f"e{i}",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z"},
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "185349003", "display": "Check up"}]}
        ],
        "subject": {"reference": f"Patient/p{pid}"},
        "participant": [{"individual": {"reference": "Practitioner/dr1"}}],
        "period": {"start": "2024-04-01T09:00:00Z", "end": "2024-04-01T09:30:00Z"},
        "serviceProvider": {"reference": "Organization/org1"},
    }


def observation(i: int, pid: int, rng: random.Random) -> dict[str, Any]:
    """Return a realistic vital-sign Observation of patient ``pid``."""
    code, display, unit = LOINC[i % len(LOINC)]
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z"},
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
            "coding": [{"system": "http://loinc.org", "code": code, "display": display}],
            "text": display,
        },
        "subject": {"reference": f"Patient/p{pid}"},
        "encounter": {"reference": f"Encounter/e{i // 3}"},
        "effectiveDateTime": "2024-04-01T09:10:00Z",
        "issued": "2024-04-01T10:00:00.000Z",
        "valueQuantity": {
            "value": round(rng.uniform(30, 200), 1),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def resources(count: int) -> dict[str, list[dict[str, Any]]]:
    """Return ``count`` resources of each type."""
    rng = random.Random(7)
    return {
        "Patient": [patient(i, rng) for i in range(count)],
        "Encounter": [encounter(i, i % max(count, 1)) for i in range(count)],
        "Observation": [observation(i, i % max(count, 1), rng) for i in range(count)],
    }


def official_examples() -> dict[str, list[dict[str, Any]]]:
    """Return the official R4 examples the tests ship (richer than the generated ones)."""
    folder = Path(__file__).resolve().parent.parent / "tests" / "data" / "r4-examples"
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.split("-")[0] not in {"Patient", "Observation", "Encounter"}:
            continue
        data = json.loads(path.read_text("utf-8"))
        out.setdefault(data["resourceType"], []).append(data)
    return out


def extract(batch: list[dict[str, Any]], repeat: int = 1) -> tuple[float, IndexRows]:
    """Return resources/s of extraction (process CPU time) and the rows of one pass."""
    rows = IndexRows()
    for n, res in enumerate(batch):
        index_rows_for(res["resourceType"], n, 1, res, into=rows)
    start = time.process_time()
    for _ in range(repeat):
        scratch = IndexRows()
        for n, res in enumerate(batch):
            index_rows_for(res["resourceType"], n, 1, res, into=scratch)
    elapsed = time.process_time() - start
    return len(batch) * repeat / elapsed, rows


def main() -> None:
    """Run the benchmark and print one line per measurement."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    generated = resources(args.count)
    mixed: list[dict[str, Any]] = [r for batch in generated.values() for r in batch]
    for rtype, batch in generated.items():
        rate, rows = extract(batch)
        print(f"extract {rtype:<12} {rate:>10,.0f} resources/s  {len(rows) / len(batch):.1f} rows each")
    rate, rows = extract(mixed)
    print(f"extract {'mixed':<12} {rate:>10,.0f} resources/s  {len(rows) / len(mixed):.1f} rows each")
    for rtype, batch in official_examples().items():
        rate, rows = extract(batch, repeat=max(1, 5000 // len(batch)))
        print(
            f"extract R4 example {rtype:<12} {rate:>10,.0f} resources/s  "
            f"{len(rows) / len(batch):.1f} rows each"
        )
    if args.database_url:
        write(args.database_url, mixed)


def write(url: str, mixed: list[dict[str, Any]]) -> None:
    """Write the rows of ``mixed`` in one batch (rolled back) and print rows/s and resources/s end to end.

    ``url`` names a migrated database; the rows go to a partition ``bench-search`` through the unit of work,
    so that row-level security applies as it does to the application.
    """
    from storage import Database
    from storage.search.index import write_index_rows

    db = Database(url)
    with db.unit_of_work("bench-search") as uow:
        pid = uow.resources.partition_id(create=True)
        assert pid is not None
        start = time.process_time()
        rows = IndexRows()
        for n, res in enumerate(mixed):
            index_rows_for(res["resourceType"], n + 1, pid, res, into=rows)
        extracted = time.process_time() - start
        start = time.perf_counter()
        written = write_index_rows(uow.session, rows)
        elapsed = time.perf_counter() - start
    db.dispose()
    print(f"write   {written:,} rows in {elapsed:.2f}s: {written / elapsed:,.0f} rows/s (staged COPY)")
    total = extracted + elapsed
    print(f"extract + write: {len(mixed) / total:,.0f} resources/s ({len(mixed):,} resources)")


if __name__ == "__main__":
    main()
