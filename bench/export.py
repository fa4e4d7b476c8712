"""Benchmark bulk export against a raw COPY of the same rows, measured in the same run.

    python -m bench.export [--resources 1000000] [--other 200000] [--big 1000] [--big-mb 5]

Starts (or uses, through BULKHEAD_TEST_DATABASE_URL / BULKHEAD_TEST_S3_ENDPOINT_URL) PostgreSQL and an S3
server, seeds one large partition next to other partitions with COPY, then measures:

1. the baseline: ``COPY (SELECT raw FROM resource WHERE partition ...) TO STDOUT`` of the export's rows, best
   of four before and four after the exports;
2. the export from kick-off (the snapshot instant) to a complete manifest with every file in S3, with one
   and with two worker processes running the export Processor, and each worker's peak RSS, with plain and
   with gzip-compressed objects (``export_gzip``);
3. the same at a quarter of the size (peak RSS must stay flat), and at a quarter of the size with a
   generated XHTML narrative in every resource (as real resources have: quotes escaped in the JSON);
4. an export of ``--big`` resources of ``--big-mb`` MB each.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import psycopg

from bench.export_seed import big_resources, seed
from core.exportspec import ExportSpec
from core.fhirdates import format_instant
from core.settings import Settings
from orchestrator.export import finish_export, plan_export
from orchestrator.lifecycle import planned_resources
from storage import Database
from storage.db import libpq_url
from storage.objectstore import object_store_from_settings
from workers.background import run_in_background
from workers.export import process_export

_WORKER: dict[str, Any] = {}


@dataclass
class _Ctx:
    partition: str
    settings: Settings
    database: Database
    object_store: Any
    job_id: str = field(default_factory=lambda: secrets.token_hex(8))

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Accept progress (the benchmark has no job table to write it to)."""


def _init_worker(settings: Settings) -> None:
    _WORKER["settings"] = settings
    _WORKER["database"] = Database(str(settings.database_url), pool_size=2)
    _WORKER["store"] = object_store_from_settings(settings)


def _run_part(
    partition: str, group_id: str, definition: dict[str, Any], background: bool
) -> tuple[dict[str, Any], int]:
    settings = _WORKER["settings"]
    ctx = _Ctx(partition, settings, _WORKER["database"], _WORKER["store"], group_id)

    def work() -> dict[str, Any]:
        return process_export(ctx, SimpleNamespace(definition=definition, group_id=group_id))

    # As the worker runtime does: a large job's processing jobs run in the background lane.
    result = run_in_background(settings.job_background_nice, work) if background else work()
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def copy_baseline(database_url: str, pid: int) -> tuple[int, int, float]:
    """Return rows, bytes and seconds of a raw COPY of the partition's live rows.

    Best of four: twice with the server's JIT setting and twice with JIT off (the export's reads run without
    it), so that the baseline is the fastest raw COPY this server gives.
    """
    best = (0, 0, float("inf"))
    sql = (
        "COPY (SELECT raw FROM resource WHERE partition_id = %s AND NOT is_history AND NOT is_deleted) "
        "TO STDOUT"
    )
    with psycopg.connect(libpq_url(database_url)) as conn:
        for attempt in range(4):
            if attempt == 2:
                conn.execute("SET jit = off")
            rows = size = 0
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(sql, (pid,)) as copy:
                for data in copy:
                    rows += 1
                    size += len(data)
            elapsed = time.perf_counter() - started
            if elapsed < best[2]:
                best = (rows, size, elapsed)
    return best


@dataclass
class ExportRun:
    """One measured export."""

    workers: int
    resources: int
    files: int
    seconds: float
    planning_seconds: float
    peak_rss: int

    @property
    def rate(self) -> float:
        """Return resources per second from kick-off to complete manifest."""
        return self.resources / self.seconds


def _ready(_: int) -> int:
    return os.getpid()


def run_export(settings: Settings, partition: str, workers: int) -> ExportRun:
    """Export ``partition`` with ``workers`` running processes; return what it took from kick-off."""
    database = Database(str(settings.database_url))
    spawn = mp.get_context("spawn")
    with spawn.Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
        # Workers are long-running in production: start them before the clock does.
        pool.map(_ready, range(workers * 4))
        kicked_off = time.perf_counter()
        group = SimpleNamespace(
            id=secrets.token_hex(8),
            definition={
                "spec": ExportSpec().to_json(),
                "transaction_time": format_instant(datetime.now(UTC)),
            },
        )
        ctx = _Ctx(partition, settings, database, None, group.id)
        definitions = plan_export(ctx, group)
        planned = time.perf_counter()
        threshold = settings.job_background_resources
        background = 0 < threshold <= planned_resources(definitions)
        parts = [(partition, group.id, d, background) for d in definitions]
        outcomes = pool.starmap(_run_part, parts, chunksize=1)
        manifest = finish_export(ctx, group, [SimpleNamespace(result=r) for r, _ in outcomes])
        done = time.perf_counter()
    database.dispose()
    return ExportRun(
        workers=workers,
        resources=int(manifest["resources"]),
        files=len(manifest["output"]),
        seconds=done - kicked_off,
        planning_seconds=planned - kicked_off,
        peak_rss=max((rss for _, rss in outcomes), default=0),
    )


def _pid(database_url: str, partition: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("SELECT id FROM partition WHERE name = %s", (partition,)).fetchone()
    assert row is not None
    return int(row[0])


def _vacuum(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE resource")


def _mb(value: int) -> str:
    return f"{value / 1e6:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    """Run the export benchmark and print its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument(
        "--other", type=int, default=200_000, help="resources in each of two other partitions"
    )
    parser.add_argument("--big", type=int, default=1000, help="number of large resources (0 to skip)")
    parser.add_argument("--big-mb", type=float, default=5.0)
    args = parser.parse_args(argv)

    from harness.services import fresh_bucket, fresh_database, postgres_server, s3_server

    with (
        postgres_server() as server,
        fresh_database(server) as url,
        s3_server() as endpoint,
        fresh_bucket(endpoint) as s3,
    ):
        db = Database(url)
        db.migrate()
        db.dispose()
        settings = s3.apply(Settings.from_env(database_url=url))
        print(f"# export benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        started = time.perf_counter()
        seed(url, "bench-other-1", args.other)
        big_name, small_name = "bench-large", "bench-small"
        seed(url, big_name, args.resources)
        seed(url, "bench-other-2", args.other)
        seed(url, small_name, args.resources // 4)
        narrative_name = "bench-narrative"
        seed(url, narrative_name, args.resources // 4, narrative=True)
        _vacuum(url)
        print(
            f"seeded {args.resources:,} + 2x{args.resources // 4:,} (one with narratives) + 2x{args.other:,} "
            f"resources in {time.perf_counter() - started:.0f}s (COPY)"
        )
        for name in (big_name, small_name, narrative_name):
            pid = _pid(url, name)
            rows, size, before = copy_baseline(url, pid)
            print(f"\n## partition {name}: {rows:,} resources, {_mb(size)}")
            runs = [
                (packed, run_export(replace(settings, export_gzip=packed), name, workers))
                for workers, packed in ((1, False), (2, False), (1, True), (2, True))
            ]
            # The baseline again after the exports: the fastest of both rounds is the reference, so that a
            # slow spell of the shared machine during the first round cannot flatter the ratios.
            _, _, after = copy_baseline(url, pid)
            seconds = min(before, after)
            copy_rate = rows / seconds
            print(
                f"COPY TO STDOUT baseline: {seconds:.2f}s, {copy_rate:,.0f} resources/s "
                f"(best of 4 before the exports: {before:.2f}s, of 4 after: {after:.2f}s)"
            )
            for packed, run in runs:
                print(
                    f"export{' (gzip objects)' if packed else ''}, {run.workers} worker process(es): "
                    f"{run.resources:,} resources "
                    f"in {run.files} files, "
                    f"{run.seconds:.2f}s (of which {run.planning_seconds:.2f}s snapshot and planning), "
                    f"{run.rate:,.0f} resources/s, ratio {run.rate / copy_rate:.2f}x COPY, "
                    f"peak worker RSS {_mb(run.peak_rss)}"
                )
        if args.big:
            size = int(args.big_mb * 1_000_000)
            started = time.perf_counter()
            big_resources(url, "bench-big", args.big, size)
            _vacuum(url)
            seeded = time.perf_counter() - started
            print(f"\n## {args.big} resources of {args.big_mb} MB (seeded in {seeded:.0f}s)")
            rows, total, seconds = copy_baseline(url, _pid(url, "bench-big"))
            print(
                f"COPY TO STDOUT baseline: {seconds:.2f}s, {rows / seconds:,.0f} resources/s, "
                f"{total / seconds / 1e6:.0f} MB/s"
            )
            for workers, packed in ((1, False), (2, False), (1, True), (2, True)):
                run = run_export(replace(settings, export_gzip=packed), "bench-big", workers)
                print(
                    f"export{' (gzip objects)' if packed else ''}, {workers} worker process(es): "
                    f"{run.resources:,} resources "
                    f"in {run.files} files, "
                    f"{run.seconds:.2f}s, {run.rate:,.1f} resources/s "
                    f"({total / run.seconds / 1e6:.0f} MB/s), "
                    f"ratio {run.rate / (rows / seconds):.2f}x COPY, peak worker RSS {_mb(run.peak_rss)}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
