"""Fair use under a hostile SearchParameter: B's small export while H reindexes a costly custom parameter.

Target (issue "One tenant's SearchParameter stalled other tenants"): while partition H runs ``$reindex``
with the most expensive custom parameter its store-time checks still accept, a 10 k-resource export in B
finishes within 2x its time on an idle fleet, and H's own writes still complete. H's parameter nests
``toChars()`` four deep over a family name with an RE2 ``matches()`` inside (short, shallow, a literal
linear-time pattern: accepted), so it costs the fourth power of the name's length and runs into the 50 ms
budget on every seeded Patient: each is then skipped for it, and counted. Everything is real and
configured as ``bulkhead serve`` configures it: PostgreSQL, Redis, an S3 server, one orchestrator, and two
worker pools of one process with 4 threads (the foreground and the background lane), the default windows.

1. H's first reindex, alone, activates the parameter (its time is H's reindex alone);
2. idle: B's export alone (median of ``--runs``, after a warm-up export), and H's writes alone (updates of
   Patients through the service functions the API calls, each evaluating the parameter);
3. busy: H's reindex is kicked off, B's export ``--delay`` seconds later; B's time is taken, then H's
   writes are timed while the reindex still runs, then the reindex is waited for.

``python -m bench fairness_hostile [--hostile 10000] [--small 10000] [--runs 3] [--record]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.common import table
from bench.export_seed import seed
from bench.fairness import run_with_services
from bench.fairness_export import finished, kick_off, production_timings
from core.fhirdates import format_instant
from core.fhirpath_limits import expression_problems
from core.jobs import ANONYMOUS, JobStatus
from core.settings import Settings
from harness.cluster import JobCluster, job_environ, unique_namespace, wait_for_status
from harness.services import app_database
from orchestrator import service as jobs
from services import rest as service
from storage import Database
from storage.db import libpq_url
from workers.broker import close_outboxes

_CHARS = "%context.name.first().family.toChars()"
HOSTILE = (
    f"Patient.name.first().family.toChars().select({_CHARS}.select({_CHARS}.select({_CHARS}"
    ".where($this.matches('^[a-z]+$'))))).count()"
)
SEARCH_PARAMETER = {
    "resourceType": "SearchParameter",
    "id": "hostile",
    "url": "https://tenant-h.example/SearchParameter/hostile",
    "name": "hostile",
    "status": "active",
    "description": "As costly as the store-time checks allow",
    "code": "hostile",
    "base": ["Patient"],
    "type": "number",
    "expression": HOSTILE,
}
WRITES = 20


def _reindex(db: Database, settings: Settings, partition: str) -> str:
    now = datetime.now(UTC)
    job = jobs.submit(
        db,
        partition,
        "reindex",
        {"types": None, "transaction_time": format_instant(now)},
        settings=settings,
        transaction_time=now,
        caller=ANONYMOUS,
    )
    return job.id


def _writes(db: Database, partition: str, n: int, tag: str) -> list[float]:
    """Update ``n`` Patients of ``partition`` with long family names over the service path; return seconds."""
    times = []
    for i in range(n):
        rid = f"w{tag}{i}"
        body: dict[str, object] = {
            "resourceType": "Patient",
            "id": rid,
            "name": [{"family": f"Vanderberg{i}"}],
        }
        started = time.perf_counter()
        service.update(db, partition, "Patient", rid, orjson.dumps(body), body)
        times.append(time.perf_counter() - started)
    return times


def _wait(db: Database, cluster: JobCluster, job_id: str) -> tuple[float, dict[str, Any]]:
    """Wait for H's reindex; return its seconds from kick-off to completed and its result."""
    ended = {JobStatus.COMPLETED, JobStatus.FAILED}
    done = wait_for_status(db, "tenant-h", job_id, ended, timeout=3600, cluster=cluster)
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.created_at is not None and done.ended_at is not None
    return (done.ended_at - done.created_at).total_seconds(), done.result or {}


def _list(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def measure(app_url: str, owner_url: str, redis_url: str, args: argparse.Namespace, logs: Path) -> str:
    """Seed H and B, store H's parameter, run B idle then next to H's reindex; return the report."""
    from harness.services import fresh_bucket, s3_server

    assert expression_problems(HOSTILE) == (), "the store-time checks must accept the parameter"
    logging.getLogger("storage.search.prepared").setLevel(logging.ERROR)  # a warning per write of H
    seed(owner_url, "tenant-h", args.hostile)
    seed(owner_url, "tenant-b", args.small)
    with psycopg.connect(libpq_url(owner_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE resource")
    db = app_database(app_url)
    service.update(
        db, "tenant-h", "SearchParameter", "hostile", orjson.dumps(SEARCH_PARAMETER), dict(SEARCH_PARAMETER)
    )
    with s3_server() as endpoint, fresh_bucket(endpoint) as s3:
        env = job_environ(
            {
                "BULKHEAD_DATABASE_URL": app_url,
                "BULKHEAD_REDIS_URL": redis_url,
                "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
                "BULKHEAD_LOG_LEVEL": "ERROR",  # each skipped Patient is a warning
                **production_timings(),
                **s3.environ(),
            }
        )
        cluster = JobCluster(env, logs)
        settings = cluster.settings
        try:
            cluster.orchestrator()
            for lane in ("foreground", "background"):  # the two worker pools ``bulkhead serve`` starts
                cluster.worker(
                    "--processes", str(args.processes), "--threads", str(args.threads), "--lane", lane
                )
            alone = _wait(db, cluster, _reindex(db, settings, "tenant-h"))
            finished(db, cluster, "tenant-b", kick_off(db, settings, "tenant-b"))  # warm-up
            idle = [
                finished(db, cluster, "tenant-b", kick_off(db, settings, "tenant-b"))
                for _ in range(args.runs)
            ]
            writes_idle = _writes(db, "tenant-h", WRITES, "idle")
            busy: list[float] = []
            writes_busy: list[float] = []
            reindex_times: list[float] = []
            for run in range(args.runs):
                h_id = _reindex(db, settings, "tenant-h")
                time.sleep(args.delay)
                busy.append(finished(db, cluster, "tenant-b", kick_off(db, settings, "tenant-b")))
                writes_busy.extend(_writes(db, "tenant-h", WRITES, f"busy{run}-"))
                seconds, _result = _wait(db, cluster, h_id)
                reindex_times.append(seconds)
        finally:
            cluster.stop()
            db.dispose()
            close_outboxes()
    t_idle, t_busy = statistics.median(idle), statistics.median(busy)
    w_idle, w_busy = statistics.median(writes_idle), statistics.median(writes_busy)
    verdict = "meets" if t_busy <= 2 * t_idle else "misses"
    skipped = alone[1].get("skipped", {})
    rows = [
        [f"B's export alone ({args.small:,} resources, idle fleet)", f"{t_idle:.2f} s", "1.00x"],
        [
            f"B's export while H reindexes ({args.hostile:,} resources)",
            f"{t_busy:.2f} s",
            f"{t_busy / t_idle:.2f}x",
        ],
        [f"H's reindex alone ({args.hostile:,} resources)", f"{alone[0]:.1f} s", "1.00x"],
        [
            "H's reindex next to B's exports (median)",
            f"{statistics.median(reindex_times):.1f} s",
            f"{statistics.median(reindex_times) / alone[0]:.2f}x",
        ],
        ["H's Patient update alone (median)", f"{w_idle * 1000:.0f} ms", "1.00x"],
        [
            f"H's Patient update during its reindex (median; max {max(writes_busy) * 1000:.0f} ms)",
            f"{w_busy * 1000:.0f} ms",
            f"{w_busy / w_idle:.2f}x",
        ],
    ]
    return "\n".join(
        [
            f"One orchestrator and two worker pools (foreground and background lane) of {args.processes} "
            f"process(es) with {args.threads} threads each, production job timings; H holds "
            f"{args.hostile:,} seeded resources ({args.hostile // 10:,} Patients) and the parameter "
            f"`{HOSTILE}` (accepted when stored; over its 50 ms budget on every seeded Patient). B kicked "
            f"off {args.delay:.1f} s after H's reindex; median of {args.runs} runs (B idle: {_list(idle)} s; "
            f"busy: {_list(busy)} s). H's reindex counted `skipped: {orjson.dumps(skipped).decode()}` and "
            f"completed every time ({_list(reindex_times)} s next to B); {WRITES} of H's Patient writes per "
            "run, each completed, each evaluating the parameter to its budget.",
            "",
            table(["measure", "time", "vs idle"], rows),
            "",
            f"Target B <= 2x idle: {verdict} it.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure and print (and with --record, write) how a small export fares next to a hostile reindex."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--hostile", type=int, default=10_000, help="resources seeded in H (a tenth Patients)"
    )
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    defaults = Settings()
    parser.add_argument("--processes", type=int, default=defaults.worker_processes)
    parser.add_argument("--threads", type=int, default=defaults.worker_threads)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds between H's and B's kick-offs")
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    return run_with_services(
        "fairness_hostile",
        argv,
        args.record,
        lambda db, redis_url, logs: measure(db.app_url, db.owner_url, redis_url, args, logs),
    )


if __name__ == "__main__":
    raise SystemExit(main())
