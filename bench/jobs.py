"""Job machinery overhead: no-op processing jobs per second through a real orchestrator and worker, against
bare Dramatiq messages through the same worker process and Redis, plus submit-to-complete latency.

Each processing job of the machinery costs a claim, a heartbeat thread, a completion (all conditional
updates), an ``orchestrate`` message and a release; the baseline is a Dramatiq actor that only counts its
message. Real processing jobs carry tens of megabytes each, so this overhead is what a job pays once.

``python -m bench jobs [--parts N] [--threads T] [--latency-runs R] [--record]``
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.common import Latencies, bench_database, machine, ms, ratio, record, table
from core.jobs import ANONYMOUS, MACHINERY, JobStatus
from harness.cluster import JobCluster, job_environ, unique_namespace, wait_for, wait_for_status
from harness.services import app_database
from orchestrator import service
from storage import Database
from storage.jobs import JobQueue
from workers.broker import close_outboxes, outbox_for

#: The baseline actor of ``tests/support/noop_actor.py`` (not imported here: it builds a broker on import).
NOOP_QUEUE = "bench-noop"
NOOP_ACTOR = "bench_noop"


def _redis_url() -> tuple[str, object | None]:
    """Return a Redis URL: BULKHEAD_TEST_REDIS_URL's, or an embedded server's (and the server to stop)."""
    url = os.environ.get("BULKHEAD_TEST_REDIS_URL")
    if url:
        return url, None
    from cli.embedded import EmbeddedRedis

    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-")))
    return server.start(), server


def _run_job(cluster: JobCluster, db: Database, partition: str, parts: int) -> float:
    started = time.perf_counter()
    job = service.submit(
        db,
        partition,
        "jobtest",
        {"parts": parts, "write": False},
        caller=ANONYMOUS,
        settings=cluster.settings,
    )
    wait_for_status(db, partition, job.id, {JobStatus.COMPLETED}, timeout=600, cluster=cluster)
    return time.perf_counter() - started


def _baseline(cluster: JobCluster, redis_url: str, messages: int) -> float:
    settings = cluster.settings
    outbox = outbox_for(settings)
    key = secrets.token_hex(6)
    counter = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    for _ in range(messages):
        outbox.send(NOOP_QUEUE, NOOP_ACTOR, "bench", key)
    name = f"{settings.queue_namespace}:bench:{key}"
    wait_for(lambda: int(counter.get(name) or 0) >= messages, timeout=600, interval=0.01, what="messages")
    elapsed = time.perf_counter() - started
    counter.close()
    return elapsed


def measure(app_url: str, redis_url: str, parts: int, threads: int, latency_runs: int, logs: Path) -> str:
    """Run the three measurements; return the report."""
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": app_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            "BULKHEAD_JOB_WINDOW_PER_JOB": str(threads * 2),
            "BULKHEAD_JOB_WINDOW_PER_PARTITION": str(threads * 2),
            "BULKHEAD_JOB_HEARTBEAT_SECONDS": "5",
            "BULKHEAD_JOB_STALE_SECONDS": "60",
            "BULKHEAD_JOB_SWEEP_SECONDS": "5",
            "BULKHEAD_LOG_LEVEL": "WARNING",
        }
    )
    cluster = JobCluster(env, logs)
    db = app_database(app_url)
    try:
        cluster.orchestrator()
        cluster.worker("--threads", str(threads), "--module", "tests.support.noop_actor")
        _run_job(cluster, db, "bench-warm", 2)
        _baseline(cluster, redis_url, 50)
        bare = _baseline(cluster, redis_url, parts)
        machinery = _run_job(cluster, db, "bench", parts)
        samples = [_run_job(cluster, db, "bench-latency", 1) for _ in range(latency_runs)]
        latency = Latencies(samples, sum(samples))
        assert len(JobQueue(db).list_groups("bench", MACHINERY)) == 1
    finally:
        cluster.stop()
        db.dispose()
        close_outboxes()
    rows = [
        ["bare Dramatiq no-op messages", parts, f"{bare:.2f} s", f"{parts / bare:,.0f}/s", "1.00x"],
        [
            "no-op processing jobs (claim, heartbeat, complete, orchestrate, release)",
            parts,
            f"{machinery:.2f} s",
            f"{parts / machinery:,.0f}/s",
            ratio(parts / machinery, parts / bare),
        ],
    ]
    lines = [
        f"One worker process with {threads} threads, one orchestrator (2 threads), windows of "
        f"{threads * 2} per job and per partition, Redis broker.",
        "",
        table(["what", "messages / jobs", "time", "rate", "vs bare"], rows),
        "",
        f"Submit to completed, one-part job, {latency_runs} runs one after the other: "
        f"p50 {ms(latency.p50)}, worst {ms(max(samples))} (two messages, a plan, a claim, a completion, "
        "a finish; each idle Dramatiq consumer polls Redis with a back-off of up to 1 s).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print (and with --record, write) the job machinery's overhead."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    redis_url, server = _redis_url()
    try:
        with bench_database() as db, tempfile.TemporaryDirectory() as tmp:
            facts = machine(db.owner_url)
            body = measure(db.app_url, redis_url, args.parts, args.threads, args.latency_runs, Path(tmp))
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    command = "python -m bench jobs " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"{facts}\n\n`{command.strip()}`\n\n{body}"
    print(text)
    if args.record:
        record("jobs", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
