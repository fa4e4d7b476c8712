"""Benchmark ``$import`` and the reindex a trusted import starts, each against a baseline from the same run.

    python -m bench import_ [--resources 1000000] [--validated 100000] [--workers 2] [--record]

Synthetic NDJSON (``tools/synthetic.py``: patients with encounters, observations, conditions, prescriptions)
is written to S3 before any timing. Then, with a real orchestrator and ``bulkhead worker --processes N``:

1. trusted import (``validation=none``, InitialLoad) of ``--resources`` resources into an empty partition,
   from submit to the completed result; baseline: a bare ``COPY resource FROM STDIN`` of the same rows (the
   stored bytes, prepared ahead) by the table owner — no row-level security, no staging, no parsing;
2. the reindex that import started (its processing jobs: parse every stored row, extract every official
   R4 search parameter, write the index rows): resources per second;
3. validated import (``validation=full``) of ``--validated`` resources; baseline: fhir.resources R4B
   ``model_validate`` alone on the same lines, on as many processes as the workers have.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.bulkwrite import bare_copy
from bench.common import bench_database, machine, ratio, record, table
from core.importspec import parse_import
from core.jobs import ANONYMOUS, MACHINERY, JobStatus
from harness.cluster import JobCluster, job_environ, unique_namespace, wait_for_status
from harness.services import app_database
from orchestrator import service
from orchestrator.import_ import prepare_import
from storage import Database, NewResource, stamp_new
from storage.db import libpq_url
from storage.jobs import JobQueue
from storage.objectstore import object_store_from_settings
from tools.synthetic import Population, organization, patient_resources, practitioner


def resources(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """Yield about ``count`` synthetic resources (whole patients with their records)."""
    population = Population(seed=seed, patients=max(1, count // 36))
    yielded = 0
    for index in range(population.organizations):
        yield organization(population, index)
        yielded += 1
    for index in range(population.practitioners):
        yield practitioner(population, index)
        yielded += 1
    for index in range(population.patients):
        for resource in patient_resources(population, index):
            if yielded >= count:
                return
            yield resource
            yielded += 1


def write_ndjson(path: Path, count: int, seed: int) -> tuple[int, int]:
    """Write the NDJSON file (each line as stored: version 1 with its time); return lines and bytes."""
    when = datetime(2025, 1, 1, tzinfo=UTC)
    lines = size = 0
    with path.open("wb") as f:
        for resource in resources(count, seed):
            line = stamp_new(resource, when).raw + b"\n"
            f.write(line)
            lines += 1
            size += len(line)
    return lines, size


def copy_baseline(owner_url: str, path: Path, batch: int = 5000, chunk: int = 50_000) -> float:
    """Return the seconds a bare COPY FROM STDIN of the file's rows takes (owner; rows prepared untimed)."""
    when = datetime(2025, 1, 1, tzinfo=UTC)
    seconds = 0.0
    with psycopg.connect(libpq_url(owner_url)) as conn, path.open("rb") as f:
        found = conn.execute(
            "INSERT INTO partition (name) VALUES ('bench-import-copy') RETURNING id"
        ).fetchone()
        assert found is not None
        conn.commit()
        while True:
            lines = [line for _, line in zip(range(chunk), f, strict=False)]
            if not lines:
                return seconds
            items = []
            for line in lines:
                head = orjson.loads(line)
                items.append(NewResource(head["resourceType"], head["id"], line.rstrip(b"\n"), {}, when))
            started = time.perf_counter()
            bare_copy(conn, int(found[0]), items, batch)
            seconds += time.perf_counter() - started


def _validate(lines: list[bytes]) -> int:
    from fhir.resources.R4B import get_fhir_model_class

    for line in lines:
        resource = orjson.loads(line)
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return len(lines)


def validation_baseline(path: Path, processes: int) -> float:
    """Return the seconds fhir.resources (R4B model_validate) alone takes on the file, on N processes."""
    lines = path.read_bytes().splitlines()
    step = max(1, len(lines) // (processes * 8))
    chunks = [lines[i : i + step] for i in range(0, len(lines), step)]
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_validate, chunks[:processes])  # warm the model classes in every process
        started = time.perf_counter()
        done = sum(pool.map(_validate, chunks))
        seconds = time.perf_counter() - started
    assert done == len(lines)
    return seconds


def cluster_env(app_url: str, redis_url: str, s3_environ: dict[str, str], workers: int) -> dict[str, str]:
    """Return the environment of a benchmark's orchestrator and workers (quiet logs, a window per worker)."""
    return job_environ(
        {
            "BULKHEAD_DATABASE_URL": app_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            "BULKHEAD_LOG_LEVEL": "WARNING",
            "BULKHEAD_JOB_WINDOW_PER_JOB": str(workers * 2),
            "BULKHEAD_JOB_WINDOW_PER_PARTITION": str(workers * 2),
            "BULKHEAD_JOB_HEARTBEAT_SECONDS": "5",
            "BULKHEAD_JOB_STALE_SECONDS": "120",
            **s3_environ,
            # The lanes as this shell sets them (to compare a job in the background lane with one in front).
            **{k: v for k, v in os.environ.items() if k.startswith("BULKHEAD_JOB_BACKGROUND_")},
        }
    )


def job_seconds(db: Database, partition: str, job_id: str, cluster: JobCluster) -> float:
    """Wait for a group job to complete; return its seconds from start to end (as the job table says)."""
    done = wait_for_status(
        db, partition, job_id, {JobStatus.COMPLETED, JobStatus.FAILED}, timeout=7200, cluster=cluster
    )
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.started_at is not None and done.ended_at is not None
    return (done.ended_at - done.started_at).total_seconds()


def run_import(
    cluster: JobCluster, db: Database, partition: str, url: str, **params: str
) -> tuple[str, float]:
    """Submit an import, wait for it; return its id and seconds from submit to completed."""
    body: dict[str, Any] = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            *({"name": k, "valueString": v} for k, v in params.items()),
            {"name": "input", "part": [{"name": "url", "valueUrl": url}]},
        ],
    }
    settings = cluster.settings
    store = object_store_from_settings(settings)
    definition = prepare_import(db, settings, store, partition, parse_import(body))
    started = time.perf_counter()
    job = service.submit(
        db,
        partition,
        "import",
        definition,
        caller=ANONYMOUS,
        settings=settings,
        transaction_time=datetime.now(UTC),
    )
    done = wait_for_status(
        db, partition, job.id, {JobStatus.COMPLETED, JobStatus.FAILED}, timeout=7200, cluster=cluster
    )
    assert done.status == JobStatus.COMPLETED, done.error
    return job.id, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the import benchmarks and print (with --record, write) the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--validated", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    from bench.jobs import _redis_url
    from harness.services import fresh_bucket, s3_server

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    redis_url, redis_server = _redis_url()
    with bench_database() as db, s3_server() as endpoint, fresh_bucket(endpoint) as s3:
        facts = machine(db.owner_url)
        print(facts, flush=True)
        trusted, validated = work / "trusted.ndjson", work / "validated.ndjson"
        rows, size = write_ndjson(trusted, args.resources, seed=1)
        checked, _ = write_ndjson(validated, args.validated, seed=2)
        print(f"data: {rows:,} lines ({size / 1e6:.0f} MB) and {checked:,} lines", flush=True)
        env = cluster_env(db.app_url, redis_url, s3.environ(), args.workers)
        cluster = JobCluster(env, work)
        store = object_store_from_settings(cluster.settings)
        urls = {}
        for name, path in (("trusted", trusted), ("validated", validated)):
            key = f"bulkhead/bench-{name}/uploads/{path.name}"
            with path.open("rb") as f, store.open_writer(key) as writer:
                for block in iter(lambda: f.read(8 << 20), b""):
                    writer.write(block)
            urls[name] = f"s3://{store.bucket}/{key}"
        copy_seconds = copy_baseline(db.owner_url, trusted)
        print(f"bare COPY: {rows / copy_seconds:,.0f}/s", flush=True)
        app = app_database(db.app_url)
        try:
            cluster.orchestrator()
            cluster.worker("--processes", str(args.workers), "--threads", "1")
            job_id, import_seconds = run_import(
                cluster, app, "bench-trusted", urls["trusted"], validation="none", mode="InitialLoad"
            )
            print(f"trusted import: {rows / import_seconds:,.0f}/s", flush=True)
            queue = JobQueue(app)
            follow_up = next(
                j for j in queue.list_groups("bench-trusted", MACHINERY, kind="reindex", limit=10)
            )
            done = wait_for_status(
                app, "bench-trusted", follow_up.id, {JobStatus.COMPLETED}, timeout=7200, cluster=cluster
            )
            assert done.started_at is not None and done.ended_at is not None
            reindex_seconds = (done.ended_at - done.started_at).total_seconds()
            print(f"reindex: {rows / reindex_seconds:,.0f}/s", flush=True)
            validation_seconds = validation_baseline(validated, args.workers)
            _, validated_seconds = run_import(
                cluster, app, "bench-validated", urls["validated"], validation="full", mode="IncrementalLoad"
            )
        finally:
            cluster.stop()
            app.dispose()
    if redis_server is not None:
        redis_server.stop()  # type: ignore[attr-defined]
    copy_rate, import_rate = rows / copy_seconds, rows / import_seconds
    validate_rate, validated_rate = checked / validation_seconds, checked / validated_seconds
    reindex_rate = rows / reindex_seconds
    command = "python -m bench import_ " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "## Import and reindex",
            "",
            f"`{command.strip()}` — {facts}. {args.workers} worker processes (one thread each) and one "
            f"orchestrator, real Redis and S3; {rows:,} synthetic resources ({size / 1e6:.0f} MB NDJSON) for "
            f"the trusted import, {checked:,} for the validated one.",
            "",
            table(
                ["measure", "resources/s", "baseline (same run)", "baseline/s", "ratio", "target"],
                [
                    [
                        "trusted import (InitialLoad, validation none), submit to result",
                        f"{import_rate:,.0f}",
                        "bare `COPY FROM STDIN` of the same rows (owner)",
                        f"{copy_rate:,.0f}",
                        ratio(import_rate, copy_rate),
                        "≥ 0.5x",
                    ],
                    [
                        "validated import (validation full)",
                        f"{validated_rate:,.0f}",
                        f"fhir.resources R4B `model_validate` alone, {args.workers} processes",
                        f"{validate_rate:,.0f}",
                        ratio(validated_rate, validate_rate),
                        "≥ 0.8x",
                    ],
                    [
                        "reindex of the trusted import (every official R4 parameter)",
                        f"{reindex_rate:,.0f}",
                        "—",
                        "—",
                        "—",
                        "≥ 10,000/s",
                    ],
                ],
            ),
            "",
            f"Job {job_id}: import {import_seconds:.1f} s; its follow-up reindex {reindex_seconds:.1f} s; "
            f"bare COPY {copy_seconds:.1f} s.",
        ]
    )
    print(text)
    if args.record:
        record("import", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
