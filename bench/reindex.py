"""Benchmark ``$reindex`` of a large partition, against the search-value extraction alone on the same rows.

    python -m bench reindex [--resources 1000000] [--workers 2] [--record]

Seeds the partition with the bulk writer without index rows (not timed), then runs ``$reindex`` through a
real orchestrator and ``bulkhead worker --processes N``: every stored row is read, parsed, run through every
official R4 search parameter of its type, and its index rows are written. Reported from the job's start to
its end. The baseline is the part no storage can avoid: parsing and extracting the index rows of the same
rows in memory, on as many processes, without writing them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.common import bench_database, machine, ratio, record, table
from bench.import_ import cluster_env, job_seconds, resources
from core.fhirdates import format_instant
from core.jobs import ANONYMOUS
from harness.cluster import JobCluster
from harness.services import app_database
from orchestrator import service
from storage import stamp_new, write_new_resources

TARGET = 10_000


def _extract(raws: list[bytes]) -> int:
    from storage.search.index import IndexRows, index_rows_for
    from storage.search.registry import builtin_registry

    registry = builtin_registry()
    rows = IndexRows()
    for n, raw in enumerate(raws):
        resource = orjson.loads(raw)
        index_rows_for(resource["resourceType"], n, 1, resource, registry=registry, into=rows)
        if len(rows) > 200_000:
            rows = IndexRows()
    return len(raws)


def extraction_rate(raws: list[bytes], processes: int) -> float:
    """Return resources per second that parsing plus index extraction alone reaches on N processes."""
    step = max(1, len(raws) // (processes * 4))
    chunks = [raws[i : i + step] for i in range(0, len(raws), step)]
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_extract, [c[:200] for c in chunks[:processes]])
        started = time.perf_counter()
        done = sum(pool.map(_extract, chunks))
        return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Seed, reindex through the workers, and print (with --record, write) the rates."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--sample", type=int, default=50_000, help="rows for the extraction baseline")
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    from bench.jobs import _redis_url
    from harness.services import fresh_bucket, s3_server

    work = Path(tempfile.mkdtemp(prefix="bench-reindex-"))
    redis_url, redis_server = _redis_url()
    partition = "bench-reindex"
    with bench_database() as db, s3_server() as endpoint, fresh_bucket(endpoint) as s3:
        facts = machine(db.owner_url)
        print(facts, flush=True)
        app = app_database(db.app_url)
        when = datetime(2025, 1, 1, tzinfo=UTC)
        sample: list[bytes] = []

        def stamped() -> object:
            for resource in resources(args.resources, seed=3):
                item = stamp_new(resource, when)
                if len(sample) < args.sample:
                    sample.append(item.raw)
                yield item

        seeded = write_new_resources(app, partition, stamped(), index=False)  # type: ignore[arg-type]
        print(f"seeded {seeded.resources:,} resources ({seeded.bytes / 1e6:.0f} MB)", flush=True)
        baseline = extraction_rate(sample, args.workers)
        print(f"extraction alone: {baseline:,.0f}/s", flush=True)
        cluster = JobCluster(cluster_env(db.app_url, redis_url, s3.environ(), args.workers), work)
        try:
            cluster.orchestrator()
            cluster.worker("--processes", str(args.workers), "--threads", "1")
            job = service.submit(
                app,
                partition,
                "reindex",
                {"types": None, "transaction_time": format_instant(datetime.now(UTC))},
                caller=ANONYMOUS,
                settings=cluster.settings,
            )
            seconds = job_seconds(app, partition, job.id, cluster)
        finally:
            cluster.stop()
            app.dispose()
    if redis_server is not None:
        redis_server.stop()  # type: ignore[attr-defined]
    rate = seeded.resources / seconds
    command = "python -m bench reindex " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "## Reindex",
            "",
            f"`{command.strip()}` — {facts}. {args.workers} worker processes (one thread each); "
            f"{seeded.resources:,} synthetic resources seeded without index rows, then `$reindex` of the "
            "partition (every official R4 search parameter of each type).",
            "",
            table(
                ["measure", "resources/s", "ratio to extraction alone", "target"],
                [
                    [
                        "`$reindex`, job start to end",
                        f"{rate:,.0f}",
                        ratio(rate, baseline),
                        f"≥ {TARGET:,}/s",
                    ],
                    [
                        f"parse + extract index rows in memory, {args.workers} processes (baseline)",
                        f"{baseline:,.0f}",
                        "1.00x",
                        "—",
                    ],
                ],
            ),
            "",
            f"Reindex job {job.id}: {seconds:.1f} s.",
        ]
    )
    print(text)
    if args.record:
        record("reindex", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
