"""Benchmark bulk update and bulk delete of many resources, each against a baseline from the same run.

    python -m bench bulk_edit [--resources 100000] [--workers 2] [--record]

Seeds ``--resources`` Patients (with their search-index rows) into two partitions with the bulk writer (not
timed). Then, through a real orchestrator and ``bulkhead worker --processes N``:

1. ``$bulk-update`` of every Patient of the first partition (a FHIRPath Patch: upsert ``active`` and add an
   identifier): each gets a new version, validated and indexed. Baseline: the work no storage avoids — parse,
   apply the patch, validate and serialise the same resources in memory, on as many processes.
2. ``$bulk-delete`` (soft) of every Patient of the second partition: a deletion version each and their index
   rows removed. Baseline: one SQL statement by the table owner doing the same to a copy of the rows (no row
   security, no batches, no ledger, index rows left alone).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.common import bench_database, machine, ratio, record, table
from bench.import_ import cluster_env, job_seconds
from core.fhirdates import format_instant
from core.jobs import ANONYMOUS
from harness.cluster import JobCluster
from harness.services import app_database
from orchestrator import service
from storage import stamp_new, write_new_resources
from storage.db import libpq_url
from tools.synthetic import Population, patient_resources

PATCH: dict[str, Any] = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "upsert"},
                {"name": "path", "valueString": "Patient"},
                {"name": "name", "valueString": "active"},
                {"name": "value", "valueBoolean": False},
            ],
        },
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "add"},
                {"name": "path", "valueString": "Patient"},
                {"name": "name", "valueString": "identifier"},
                {"name": "value", "valueIdentifier": {"system": "urn:example:migrated", "value": "2025"}},
            ],
        },
    ],
}


def patients(count: int) -> list[dict[str, Any]]:
    """Return ``count`` synthetic Patients."""
    population = Population(seed=7, patients=count)
    out: list[dict[str, Any]] = []
    for index in range(count):
        out.extend(r for r in patient_resources(population, index) if r["resourceType"] == "Patient")
    return out[:count]


def _patch_all(raws: list[bytes]) -> int:
    from core.fhirpatch import apply_patch, parse_patch, patched_bytes
    from core.validation import full_issues

    ops = parse_patch(PATCH)
    when = datetime.now(UTC)
    for raw in raws:
        before = orjson.loads(raw)
        after = apply_patch(before, ops)
        assert not full_issues(after, "Patient")
        patched_bytes(raw, before, after, 2, when)
    return len(raws)


def patch_rate(raws: list[bytes], processes: int) -> float:
    """Return resources per second of parse + patch + validate + serialise alone, on N processes."""
    step = max(1, len(raws) // (processes * 4))
    chunks = [raws[i : i + step] for i in range(0, len(raws), step)]
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_patch_all, [c[:50] for c in chunks[:processes]])
        started = time.perf_counter()
        done = sum(pool.map(_patch_all, chunks))
        return done / (time.perf_counter() - started)


def sql_delete_seconds(owner_url: str, partition: str) -> float:
    """Return the seconds one owner SQL statement takes to soft-delete every Patient of a partition."""
    with psycopg.connect(libpq_url(owner_url)) as conn:
        found = conn.execute("SELECT id FROM partition WHERE name = %s", (partition,)).fetchone()
        assert found is not None
        started = time.perf_counter()
        conn.execute(
            """
            WITH old AS (
                UPDATE resource SET is_history = true
                WHERE partition_id = %s AND resource_type = 'Patient' AND NOT is_history AND NOT is_deleted
                RETURNING partition_id, resource_type, resource_id, version
            )
            INSERT INTO resource (partition_id, resource_type, resource_id, version, last_updated, is_deleted,
                                  is_history, raw)
            SELECT partition_id, resource_type, resource_id, version + 1, now(), true, false, NULL FROM old
            """,
            (int(found[0]),),
        )
        conn.commit()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Seed, run both operations through the workers, and print (with --record, write) the rates."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    from bench.jobs import _redis_url
    from harness.services import fresh_bucket, s3_server

    work = Path(tempfile.mkdtemp(prefix="bench-bulk-edit-"))
    redis_url, redis_server = _redis_url()
    with bench_database() as db, s3_server() as endpoint, fresh_bucket(endpoint) as s3:
        facts = machine(db.owner_url)
        print(facts, flush=True)
        app = app_database(db.app_url)
        when = datetime(2025, 1, 1, tzinfo=UTC)
        items = [stamp_new(p, when) for p in patients(args.resources)]
        for name in ("bench-update", "bench-delete", "bench-delete-sql"):
            write_new_resources(app, name, items)
        count = len(items)
        print(f"seeded {count:,} Patients in three partitions", flush=True)
        baseline_update = patch_rate([i.raw for i in items], args.workers)
        baseline_delete = count / sql_delete_seconds(db.owner_url, "bench-delete-sql")
        cluster = JobCluster(cluster_env(db.app_url, redis_url, s3.environ(), args.workers), work)
        try:
            cluster.orchestrator()
            cluster.worker("--processes", str(args.workers), "--threads", "1")
            now = format_instant(datetime.now(UTC))
            update = service.submit(
                app,
                "bench-update",
                "bulk-update",
                {
                    "op": "bulk-update",
                    "types": ["Patient"],
                    "query": [],
                    "patch": PATCH,
                    "transaction_time": now,
                },
                caller=ANONYMOUS,
                settings=cluster.settings,
            )
            update_seconds = job_seconds(app, "bench-update", update.id, cluster)
            delete = service.submit(
                app,
                "bench-delete",
                "bulk-delete",
                {
                    "op": "bulk-delete",
                    "types": ["Patient"],
                    "query": [],
                    "hard": False,
                    "purge_history": False,
                    "transaction_time": now,
                },
                caller=ANONYMOUS,
                settings=cluster.settings,
            )
            delete_seconds = job_seconds(app, "bench-delete", delete.id, cluster)
        finally:
            cluster.stop()
            app.dispose()
    if redis_server is not None:
        redis_server.stop()  # type: ignore[attr-defined]
    update_rate, delete_rate = count / update_seconds, count / delete_seconds
    command = "python -m bench bulk_edit " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "## Bulk update and bulk delete",
            "",
            f"`{command.strip()}` — {facts}. {args.workers} worker processes (one thread each); {count:,} "
            "synthetic Patients with their search-index rows in each partition; job start to end.",
            "",
            table(
                ["measure", "resources/s", "baseline (same run)", "baseline/s", "ratio"],
                [
                    [
                        "`$bulk-update` (upsert + add; validated, indexed, new version each)",
                        f"{update_rate:,.0f}",
                        f"parse + patch + validate + serialise in memory, {args.workers} processes",
                        f"{baseline_update:,.0f}",
                        ratio(update_rate, baseline_update),
                    ],
                    [
                        "`$bulk-delete` (soft; index rows removed)",
                        f"{delete_rate:,.0f}",
                        "one owner SQL statement, same rows",
                        f"{baseline_delete:,.0f}",
                        ratio(delete_rate, baseline_delete),
                    ],
                ],
            ),
        ]
    )
    print(text)
    if args.record:
        record("bulk_edit", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
