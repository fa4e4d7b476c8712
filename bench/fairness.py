"""Fair use of the worker fleet: a small job in partition B while partition A runs a huge one.

Target (issue "Tenant security and fairness"): B's small job finishes within 2x of its time on an idle
fleet. Both jobs are made of processing jobs that each take the same time (the test-only ``jobtest``
operation: ``steps`` x ``step_seconds`` per part, like an export chunk that waits on the database and S3),
on a real orchestrator and worker process (Redis broker, the windows of the settings).

1. idle: B's job alone, submit to completed (median of ``--runs``);
2. busy: A's job of ``--big-parts`` parts is running (and holding its whole window) when B's job is
   submitted; B's submit-to-completed time, then A is cancelled.

``python -m bench fairness [--big-parts 400] [--small-parts 4] [--step-seconds 0.25] [--threads 4]``
(``--record`` writes the result into ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import BenchDatabase, bench_database, machine, record, table
from bench.jobs import _redis_url
from core.jobs import ANONYMOUS, JobStatus
from core.settings import Settings
from harness.cluster import JobCluster, job_environ, unique_namespace, wait_for, wait_for_status
from harness.services import app_database
from orchestrator import service
from storage import Database
from storage.jobs import JobQueue
from workers.broker import close_outboxes

ENDED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def _small(cluster: JobCluster, db: Database, partition: str, parts: int, step: float) -> float:
    started = time.perf_counter()
    job = service.submit(
        db,
        partition,
        "jobtest",
        {"parts": parts, "steps": 2, "step_seconds": step / 2, "write": False},
        caller=ANONYMOUS,
        settings=cluster.settings,
    )
    wait_for_status(db, partition, job.id, {JobStatus.COMPLETED}, timeout=600, cluster=cluster)
    return time.perf_counter() - started


def measure(app_url: str, redis_url: str, args: argparse.Namespace, logs: Path) -> str:
    """Run B idle, then B next to A's huge job; return the report."""
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": app_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            # the production defaults, not the tests' small windows
            "BULKHEAD_JOB_WINDOW_PER_JOB": str(Settings().job_window_per_job),
            "BULKHEAD_JOB_WINDOW_PER_PARTITION": str(Settings().job_window_per_partition),
            "BULKHEAD_JOB_HEARTBEAT_SECONDS": "5",
            "BULKHEAD_JOB_STALE_SECONDS": "60",
            "BULKHEAD_LOG_LEVEL": "WARNING",
        }
    )
    cluster = JobCluster(env, logs)
    db = app_database(app_url)
    settings = cluster.settings
    queue = JobQueue(db)
    try:
        cluster.orchestrator()
        cluster.worker("--threads", str(args.threads))
        _small(cluster, db, "bench-warm", 1, 0.01)
        idle = [
            _small(cluster, db, f"b-idle-{n}", args.small_parts, args.step_seconds) for n in range(args.runs)
        ]
        busy: list[float] = []
        huge_done: list[int] = []
        for n in range(args.runs):
            huge = service.submit(
                db,
                f"a-{n}",
                "jobtest",
                {"parts": args.big_parts, "steps": 2, "step_seconds": args.step_seconds / 2, "write": False},
                caller=ANONYMOUS,
                settings=settings,
            )
            group = (f"a-{n}", huge.id)

            def window_full(group: tuple[str, str] = group) -> bool:
                running = sum(1 for p in queue.parts(*group) if p.status == JobStatus.RUNNING)
                return running >= min(int(args.threads), settings.job_window_per_job)

            def stopped(group: tuple[str, str] = group) -> bool:
                return all(p.status in ENDED for p in queue.parts(*group))

            wait_for(window_full, timeout=120, what="the huge job to fill its window")
            busy.append(_small(cluster, db, f"b-busy-{n}", args.small_parts, args.step_seconds))
            huge_done.append(
                sum(1 for p in queue.parts(f"a-{n}", huge.id) if p.status == JobStatus.COMPLETED)
            )
            service.cancel(db, f"a-{n}", huge.id, caller=ANONYMOUS, settings=settings)
            wait_for(stopped, timeout=120, what="the huge job's parts to stop")
    finally:
        cluster.stop()
        db.dispose()
        close_outboxes()
    t_idle, t_busy = statistics.median(idle), statistics.median(busy)
    verdict = "meets" if t_busy <= 2 * t_idle else "misses"
    rows = [
        ["B alone (idle fleet)", f"{t_idle:.2f} s", "1.00x"],
        [f"B while A runs {args.big_parts} parts", f"{t_busy:.2f} s", f"{t_busy / t_idle:.2f}x"],
    ]
    return "\n".join(
        [
            f"One worker process with {args.threads} threads, one orchestrator; windows of "
            f"{settings.job_window_per_job} per job and {settings.job_window_per_partition} per partition. "
            f"Every part takes {args.step_seconds:.2f} s; B has {args.small_parts} parts; median of "
            f"{args.runs} runs.",
            "",
            table(["job", "submit to completed", "vs idle"], rows),
            "",
            f"B finished while A had completed {min(huge_done)} to {max(huge_done)} of its {args.big_parts} "
            f"parts; target B <= 2x idle: {verdict} it.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure and print (and with --record, write) how a small job fares next to a huge one."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--big-parts", type=int, default=400)
    parser.add_argument("--small-parts", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    return run_with_services(
        "fairness", argv, args.record, lambda db, redis_url, logs: measure(db.app_url, redis_url, args, logs)
    )


def run_with_services(
    name: str, argv: list[str] | None, record_it: bool, measure_in: Callable[[BenchDatabase, str, Path], str]
) -> int:
    """Run ``measure_in`` with a fresh database, a Redis and a log directory; print and record its report."""
    redis_url, server = _redis_url()
    try:
        with bench_database() as db, tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as logs:
            facts = machine(db.owner_url)
            body = measure_in(db, redis_url, Path(logs))
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    command = f"python -m bench {name} " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"{facts}\n\n`{command.strip()}`\n\n{body}"
    print(text)
    if record_it:
        record(name, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
