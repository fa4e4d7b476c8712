"""Real job-machinery processes for tests: ``bulkhead orchestrator`` and ``bulkhead worker`` subprocesses.

Each test run uses a queue namespace of its own, so that runs sharing one Redis never take each other's
messages. Processes run in their own session (process group): ``kill()`` is a ``kill -9`` of the whole
group, as when a machine dies; ``stop()`` is a SIGTERM with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.jobs import JobInfo, JobStatus
from core.settings import Settings
from harness.services import ADMIN_ROLE_PASSWORD, fresh_database, migrate_for_tests
from storage import Database
from storage.jobs import JobQueue

ROOT = Path(__file__).resolve().parents[1]
BULKHEAD = Path(sys.executable).with_name("bulkhead")

#: Timings small enough for tests: heartbeats every 0.3 s, stale after 3 s, a sweep every 0.5 s.
FAST_JOB_SETTINGS: dict[str, str] = {
    "BULKHEAD_JOB_HEARTBEAT_SECONDS": "0.3",
    "BULKHEAD_JOB_STALE_SECONDS": "3",
    "BULKHEAD_JOB_SWEEP_SECONDS": "0.5",
    "BULKHEAD_JOB_RETRY_BACKOFF_SECONDS": "0.2",
    "BULKHEAD_JOB_RETRY_BACKOFF_MAX_SECONDS": "1",
    "BULKHEAD_JOB_MAX_ATTEMPTS": "3",
    "BULKHEAD_JOB_WINDOW_PER_JOB": "2",
    "BULKHEAD_JOB_WINDOW_PER_PARTITION": "2",
    "BULKHEAD_JOB_MODULES": "tests.support.jobops",
    "BULKHEAD_LOG_LEVEL": "INFO",
}


#: The public base URL the end-to-end clusters announce (status URLs start with it).
PUBLIC_BASE = "http://bulkhead.test"


def job_environ(base: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """Return a process environment: ``base`` with the fast job timings and the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")}
    env.update(FAST_JOB_SETTINGS)
    env.update(base)
    env.update(overrides)
    env.setdefault("BULKHEAD_DATABASE_ADMIN_PASSWORD", ADMIN_ROLE_PASSWORD)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def settings_of(env: Mapping[str, str]) -> Settings:
    """Return the settings a process started with ``env`` reads."""
    return Settings.from_env(env)


def unique_namespace() -> str:
    """Return a queue namespace no other test run uses."""
    return f"bulkhead-test-{secrets.token_hex(6)}"


@dataclass
class JobProcess:
    """One ``bulkhead`` subprocess in a process group of its own, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> JobProcess:
        """Start the process."""
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                [str(BULKHEAD), *self.argv],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    def running(self) -> bool:
        """Return True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """Kill the whole process group at once (SIGKILL), as a machine failure would."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        _reap_group(self.popen.pid)

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the process to stop (SIGTERM); kill its group if it is not gone in time."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self.kill()

    def log_tail(self, lines: int = 60) -> str:
        """Return the end of the process's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _reap_group(pgid: int) -> None:
    """Kill whatever is left of a process group (children that outlived their parent)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@dataclass
class JobCluster:
    """An orchestrator and workers sharing one environment (database, Redis namespace, object store)."""

    env: dict[str, str]
    log_dir: Path
    processes: list[JobProcess] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """Return the settings the cluster's processes read."""
        return settings_of(self.env)

    def orchestrator(self, *args: str) -> JobProcess:
        """Start an orchestrator process."""
        return self._start("orchestrator", ["orchestrator", *args])

    def worker(self, *args: str) -> JobProcess:
        """Start a worker (by default one process with two threads)."""
        argv = ["worker", *args]
        if "--processes" not in args:
            argv += ["--processes", "1"]
        if "--threads" not in args:
            argv += ["--threads", "2"]
        return self._start("worker", argv)

    def _start(self, name: str, argv: list[str]) -> JobProcess:
        n = sum(1 for p in self.processes if p.name == name)
        process = JobProcess(name, argv, self.env, self.log_dir / f"{name}-{n}.log").start()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Stop every process this cluster started."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def logs(self) -> str:
        """Return the tails of every process's log (for assertion messages)."""
        return "\n".join(f"--- {p.name} {p.argv}\n{p.log_tail()}" for p in self.processes)

    def with_env(self, **overrides: str) -> JobCluster:
        """Return a cluster with the same logs directory and ``overrides`` in its environment."""
        return replace(self, env={**self.env, **overrides}, processes=[])


@contextmanager
def migrated_database(server_url: str) -> Iterator[str]:
    """Yield the application-role URL of a fresh, migrated database on the server of ``server_url``."""
    with fresh_database(server_url) as url:
        yield migrate_for_tests(url)


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; return that, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_status(
    database: Database,
    partition: str,
    job_id: str,
    statuses: set[JobStatus],
    *,
    timeout: float = 30.0,
    cluster: JobCluster | None = None,
) -> JobInfo:
    """Wait until job ``job_id`` reaches one of ``statuses``; return it."""
    queue = JobQueue(database)

    def reached() -> JobInfo | None:
        job = queue.get(partition, job_id)
        return job if job is not None and job.status in statuses else None

    try:
        result: JobInfo = wait_for(reached, timeout=timeout, what=f"job {job_id} to be {sorted(statuses)}")
    except AssertionError as exc:
        job = queue.get(partition, job_id)
        detail = f"\njob now: {job}\n" + (cluster.logs() if cluster is not None else "")
        raise AssertionError(f"{exc}{detail}") from None
    return result
