"""Measure what idle job processes cost: CPU of a `bulkhead worker` and a `bulkhead orchestrator` at rest.

    python -m bench idle [--seconds 20] [--record]

Real processes (`bulkhead worker --processes 1 --threads 4` and `bulkhead orchestrator`, their Redis and
PostgreSQL), nothing to do. Their CPU time (every process of each one's group, from ``/proc``) over
``--seconds`` after a warm-up, as a share of one core, with the consumers waiting for a wake-up (the default)
beside the same processes with ``BULKHEAD_REDIS_WAKE=0`` (each idle consumer polls its queue every 200 ms),
measured in the same run: the baseline. The target is below 1 % of one core for an idle worker.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import bench_database, machine, record, table
from harness.cluster import JobCluster, JobProcess, job_environ, unique_namespace
from harness.services import redis_server

_TICKS = os.sysconf("SC_CLK_TCK")


def _group_cpu_seconds(pgid: int) -> float:
    """Return the CPU time (user + system) of every live process of a process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # After the command: state, ppid, pgrp, ... utime (12th), stime (13th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _idle_share(process: JobProcess, seconds: float, warmup: float) -> float:
    assert process.popen is not None
    time.sleep(warmup)
    start_cpu, start = _group_cpu_seconds(process.popen.pid), time.monotonic()
    time.sleep(seconds)
    used = _group_cpu_seconds(process.popen.pid) - start_cpu
    return used / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    shares: dict[tuple[str, str], float] = {}
    with bench_database() as db, redis_server() as redis_url, tempfile.TemporaryDirectory() as logs:
        base = job_environ(
            {
                "BULKHEAD_DATABASE_URL": db.app_url,
                "BULKHEAD_REDIS_URL": redis_url,
                "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
                "BULKHEAD_JOB_MODULES": "",
                "BULKHEAD_JOB_HEARTBEAT_SECONDS": "5",
                "BULKHEAD_JOB_SWEEP_SECONDS": "5",
                "BULKHEAD_LOG_LEVEL": "WARNING",
            }
        )
        for mode, wake in (("baseline: polling consumers", "0"), ("waiting consumers", "1")):
            cluster = JobCluster({**base, "BULKHEAD_REDIS_WAKE": wake}, Path(logs))
            try:
                for name in ("worker", "orchestrator"):
                    process = cluster.worker("--threads", "4") if name == "worker" else cluster.orchestrator()
                    print(f"  {mode}: {name}...", flush=True)
                    share = _idle_share(process, args.seconds, args.warmup)
                    shares[(mode, name)] = share
                    process.stop()
            finally:
                cluster.stop()
    for name in ("worker", "orchestrator"):
        polling, waiting = shares[("baseline: polling consumers", name)], shares[("waiting consumers", name)]
        rows.append(
            [
                f"idle `bulkhead {name}`",
                f"{100 * polling:.2f} %",
                f"{100 * waiting:.2f} %",
                f"{waiting / polling:.2f}x" if polling else "n/a",
            ]
        )
    text = "\n".join(
        [
            "## Idle job processes (`bench/idle.py`)",
            "",
            f"`python -m bench idle{' ' + ' '.join(argv) if argv else ''}` — {machine()}.",
            f"CPU of each process group over {args.seconds:.0f} s at rest (after {args.warmup:.0f} s of"
            " warm-up), as a share of one core: consumers that wait for a wake-up (the default) beside the"
            " same processes with `BULKHEAD_REDIS_WAKE=0` (each idle consumer polls its queue every 200 ms),"
            " same run. Target: an idle worker below 1 % of one core.",
            "",
            table(["process", "polling (baseline)", "waiting", "ratio"], rows),
        ]
    )
    print(text)
    if args.record:
        record("idle", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
