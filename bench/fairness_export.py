"""Fair use of the worker fleet with real exports: B's small export while A exports a large partition.

Target (issue "Tenant security and fairness"): while partition A exports 1 M resources, a 10 k-resource
export in B finishes within 2x its time on an idle system. Everything is real and configured as
``bulkhead serve`` configures it: PostgreSQL, Redis, an S3 server, one orchestrator, and two worker pools of
one process with 4 threads (the foreground lane and the background lane, where A's export runs because it is
planned at 100,000 resources or more), the default windows and chunk size. Each time is kick-off to
completed, as the job table records them.

1. idle: B's export alone (median of ``--runs``, after a warm-up export);
2. busy: A's export is kicked off, B's ``--delay`` seconds later (A's processing jobs are then running);
   B's time is taken, then A is waited for.

``python -m bench fairness_export [--large 1000000] [--small 10000] [--runs 3] [--record]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.common import table
from bench.export_seed import seed
from bench.fairness import run_with_services
from core.exportspec import ExportSpec
from core.fhirdates import format_instant
from core.jobs import ANONYMOUS, JobStatus
from core.settings import Settings
from harness.cluster import JobCluster, job_environ, unique_namespace, wait_for_status
from harness.services import app_database
from orchestrator import service
from storage import Database
from storage.db import libpq_url
from workers.broker import close_outboxes


def kick_off(db: Database, settings: Settings, partition: str) -> str:
    """Submit an export of the whole partition as the API does; return its id."""
    now = datetime.now(UTC)
    job = service.submit(
        db,
        partition,
        "export",
        {"spec": ExportSpec().to_json(), "transaction_time": format_instant(now)},
        caller=ANONYMOUS,
        settings=settings,
        transaction_time=now,
    )
    return job.id


def finished(db: Database, cluster: JobCluster, partition: str, job_id: str) -> float:
    """Wait for the export; return seconds from its kick-off to completed.

    Both instants are the job's own (``created_at`` and ``ended_at``, stamped by the database), so that the
    0.1 s between this benchmark's polls does not round the times of a half-second job.
    """
    done = wait_for_status(
        db, partition, job_id, {JobStatus.COMPLETED, JobStatus.FAILED}, timeout=900, cluster=cluster
    )
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.created_at is not None and done.ended_at is not None
    return (done.ended_at - done.created_at).total_seconds()


def production_timings() -> dict[str, str]:
    """Return the job settings' production defaults (or this environment's), not the tests' fast ones."""
    defaults = Settings()
    names = {
        "BULKHEAD_JOB_HEARTBEAT_SECONDS": defaults.job_heartbeat_seconds,
        "BULKHEAD_JOB_STALE_SECONDS": defaults.job_stale_seconds,
        "BULKHEAD_JOB_SWEEP_SECONDS": defaults.job_sweep_seconds,
        "BULKHEAD_JOB_RETRY_BACKOFF_SECONDS": defaults.job_retry_backoff_seconds,
        "BULKHEAD_JOB_RETRY_BACKOFF_MAX_SECONDS": defaults.job_retry_backoff_max_seconds,
        "BULKHEAD_JOB_MAX_ATTEMPTS": defaults.job_max_attempts,
        "BULKHEAD_JOB_WINDOW_PER_JOB": defaults.job_window_per_job,
        "BULKHEAD_JOB_WINDOW_PER_PARTITION": defaults.job_window_per_partition,
        "BULKHEAD_EXPORT_CHUNK_BYTES": defaults.export_chunk_bytes,
        "BULKHEAD_JOB_BACKGROUND_RESOURCES": defaults.job_background_resources,
        "BULKHEAD_JOB_BACKGROUND_NICE": defaults.job_background_nice,
    }
    return {name: os.environ.get(name, str(value)) for name, value in names.items()}


def _list(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def measure(app_url: str, owner_url: str, redis_url: str, args: argparse.Namespace, logs: Path) -> str:
    """Seed A and B, run B idle then next to A; return the report."""
    from harness.services import fresh_bucket, s3_server

    seed(owner_url, "tenant-a", args.large)
    seed(owner_url, "tenant-b", args.small)
    with psycopg.connect(libpq_url(owner_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE resource")
    with s3_server() as endpoint, fresh_bucket(endpoint) as s3:
        env = job_environ(
            {
                "BULKHEAD_DATABASE_URL": app_url,
                "BULKHEAD_REDIS_URL": redis_url,
                "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
                "BULKHEAD_LOG_LEVEL": "WARNING",
                **production_timings(),
                **s3.environ(),
            }
        )
        cluster = JobCluster(env, logs)
        db = app_database(app_url)
        settings = cluster.settings
        try:
            cluster.orchestrator()
            for lane in ("foreground", "background"):  # the two worker pools ``bulkhead serve`` starts
                cluster.worker(
                    "--processes", str(args.processes), "--threads", str(args.threads), "--lane", lane
                )
            finished(db, cluster, "tenant-b", kick_off(db, settings, "tenant-b"))  # warm-up
            idle = [
                finished(db, cluster, "tenant-b", kick_off(db, settings, "tenant-b"))
                for _ in range(args.runs)
            ]
            busy: list[float] = []
            large: list[float] = []
            for _ in range(args.runs):
                a_id = kick_off(db, settings, "tenant-a")
                time.sleep(args.delay)
                busy.append(finished(db, cluster, "tenant-b", kick_off(db, settings, "tenant-b")))
                large.append(finished(db, cluster, "tenant-a", a_id))
        finally:
            cluster.stop()
            db.dispose()
            close_outboxes()
    t_idle, t_busy = statistics.median(idle), statistics.median(busy)
    verdict = "meets" if t_busy <= 2 * t_idle else "misses"
    rows = [
        [f"B alone ({args.small:,} resources, idle fleet)", f"{t_idle:.2f} s", "1.00x"],
        [f"B while A exports {args.large:,} resources", f"{t_busy:.2f} s", f"{t_busy / t_idle:.2f}x"],
    ]
    return "\n".join(
        [
            f"One orchestrator and two worker pools (foreground and background lane) of {args.processes} "
            f"process(es) with {args.threads} threads each (background lane from "
            f"{settings.job_background_resources:,} resources, nice +{settings.job_background_nice}), "
            f"windows of {settings.job_window_per_job} per job and {settings.job_window_per_partition} per "
            "partition, "
            f"export processing jobs of {settings.export_chunk_bytes // 2**20} MiB, gzip objects; B kicked "
            f"off {args.delay:.1f} s after A; median of {args.runs} runs (idle: {_list(idle)} s; "
            f"busy: {_list(busy)} s). A's export took "
            f"{statistics.median(large):.1f} s (median).",
            "",
            table(["export", "kick-off to completed", "vs idle"], rows),
            "",
            f"Target B <= 2x idle: {verdict} it.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure and print (and with --record, write) how a small export fares next to a large one."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    defaults = Settings()
    parser.add_argument("--processes", type=int, default=defaults.worker_processes)
    parser.add_argument("--threads", type=int, default=defaults.worker_threads)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds between A's and B's kick-offs")
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    return run_with_services(
        "fairness_export",
        argv,
        args.record,
        lambda db, redis_url, logs: measure(db.app_url, db.owner_url, redis_url, args, logs),
    )


if __name__ == "__main__":
    raise SystemExit(main())
