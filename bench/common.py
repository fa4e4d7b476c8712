"""Helpers the benchmarks share: a database, a real API server, timing, peak RSS, ratios and the report.

- ``bench_database()``: a fresh, migrated database of the run's own (on the server BULKHEAD_TEST_DATABASE_URL
  names, else on an embedded PostgreSQL), dropped at the end; yields owner and application-role URLs.
- ``api_server(database_url)``: the API under gunicorn with the flags ``bulkhead serve`` uses, on a free
  loopback port (its log in a temporary file, shown if it fails to start); stopped at the end.
- ``timed()``, ``Latencies`` (p50 / p99), ``ratio()``, ``peak_rss()`` of a process tree.
- ``machine()`` describes the machine; ``record(name, text)`` writes a benchmark's section of
  ``docs/benchmarks.md`` (between ``<!-- bench:NAME -->`` markers, so reruns replace it).

Every result is reported next to a baseline measured in the same run, on the same machine, as a ratio.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import psycopg
import requests

from cli.embedded import free_port
from storage.db import libpq_url

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class BenchDatabase:
    """A migrated database of this run: the owner's URL (bypasses row-level security) and the app's."""

    owner_url: str
    app_url: str


@contextmanager
def bench_database() -> Iterator[BenchDatabase]:
    """Yield a fresh migrated database; drop it (and stop any server started for it) at the end."""
    from harness.services import fresh_database, migrate_for_tests, postgres_server

    with postgres_server() as server, fresh_database(server) as url:
        yield BenchDatabase(owner_url=url, app_url=migrate_for_tests(url))


def gunicorn_argv(port: int, *, workers: int = 2, threads: int = 4) -> list[str]:
    """Return the gunicorn command line ``bulkhead serve`` runs the API with, on 127.0.0.1:``port``."""
    from gunicorn.config import KNOWN_SETTINGS

    extras = (
        ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []
    )
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--access-logfile",
        "-",
        "--graceful-timeout",
        "10",
        "--keep-alive",
        "15",
        *extras,
        "api.wsgi:app()",
    ]


@dataclass(frozen=True)
class ApiServer:
    """A running API server: its base URL and gunicorn's master process id."""

    base: str
    pid: int


@contextmanager
def api_server(database_url: str, *, workers: int = 2, threads: int = 4) -> Iterator[ApiServer]:
    """Start the API under gunicorn against ``database_url``; wait until it answers; stop it at the end."""
    port = free_port()
    env = {
        **os.environ,
        "BULKHEAD_DATABASE_URL": database_url,
        "BULKHEAD_HOST": "127.0.0.1",
        "BULKHEAD_PORT": str(port),
        "BULKHEAD_LOG_LEVEL": "WARNING",
    }
    argv = gunicorn_argv(port, workers=workers, threads=threads)
    log = tempfile.NamedTemporaryFile(prefix="bulkhead-bench-api-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                tail = Path(log.name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the API server exited with {proc.returncode}:\n{tail}")
            try:
                if requests.get(f"{base}/metadata", timeout=30).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not answer within 60 s")
            time.sleep(0.2)
        yield ApiServer(base, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Return ``fn()``'s result and the seconds it took."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def best_of(runs: int, fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` ``runs`` times; return the result and seconds of the fastest run."""
    best: tuple[T, float] | None = None
    for _ in range(runs):
        result, seconds = timed(fn)
        if best is None or seconds < best[1]:
            best = (result, seconds)
    assert best is not None
    return best


@dataclass(frozen=True)
class Latencies:
    """Latency samples in seconds, with the time the whole set took."""

    samples: Sequence[float]
    wall: float

    def percentile(self, q: float) -> float:
        """Return the ``q`` percentile (nearest rank), in seconds."""
        ordered = sorted(self.samples)
        if not ordered:
            return float("nan")
        rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    @property
    def p50(self) -> float:
        """Return the median, in seconds."""
        return self.percentile(50)

    @property
    def p99(self) -> float:
        """Return the 99th percentile, in seconds."""
        return self.percentile(99)

    @property
    def throughput(self) -> float:
        """Return operations per second over the whole set."""
        return len(self.samples) / self.wall if self.wall > 0 else 0.0


def ms(seconds: float) -> str:
    """Format seconds as milliseconds."""
    return f"{seconds * 1000:.1f} ms"


def ratio(value: float, baseline: float) -> str:
    """Format ``value / baseline`` as ``1.23x``."""
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def peak_rss(pid: int, *, children: bool = True) -> int:
    """Return the peak resident set size in bytes of a process (and, summed, its living children)."""
    total = 0
    pids = [pid]
    if children:
        pids.extend(_descendants(pid))
    for one in pids:
        try:
            status = Path(f"/proc/{one}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if found:
            total += int(found.group(1)) * 1024
    return total


def _descendants(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = [int(k) for k in kids]
    for kid in list(found):
        found.extend(_descendants(kid))
    return found


def server_version(url: str) -> str:
    """Return the PostgreSQL server version of ``url``."""
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def machine(database_url: str | None = None) -> str:
    """Describe the machine in one line: CPUs, memory, OS, Python, PostgreSQL, load, date."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0]) * 1024
    except (OSError, IndexError):
        mem = 0
    parts = [
        f"{os.cpu_count()} CPUs ({cpu})",
        f"{mem / 2**30:.0f} GiB RAM",
        platform.system(),
        f"Python {platform.python_version()}",
    ]
    if database_url:
        parts.append(f"PostgreSQL {server_version(database_url)}")
    parts.append(f"load average {os.getloadavg()[0]:.1f} at the start")
    parts.append(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def record(name: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace benchmark ``name``'s section of ``docs/benchmarks.md`` with ``text`` (appended if new)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.strip()}\n{end}"
    doc = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
