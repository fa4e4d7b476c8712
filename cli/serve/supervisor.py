"""Start and stop every process of a single-node Bulkhead (``bulkhead serve``).

What is not configured runs embedded under the data directory: PostgreSQL, Redis and an S3 server
(SeaweedFS), each refusing clients without its credentials (made once and kept in the data directory, see
``cli.serve.credentials``; nothing here prints them). Then the schema is migrated and the API
(gunicorn), the orchestrator and the workers start as child processes with the resolved URLs in their
environment. Every child runs in a process group of its own and gets SIGTERM from the kernel if this
process dies; on Ctrl-C or SIGTERM they all stop, in order, and whatever does not stop in time is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from cli.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedS3,
    ManagedProcess,
    reserve_port,
    wait_for_port,
)
from cli.serve.checks import (
    ServeError,
    StopRequested,
    check_port_free,
    ensure_bucket,
    gunicorn_extras,
    redact,
    wait_for_metadata,
)
from cli.serve.credentials import (
    embedded_database_settings,
    embedded_postgres,
    embedded_redis,
    serve_secret,
)
from cli.serve.runtime_file import RUNTIME_FILE, write_runtime
from cli.serve.summary import Placement, summary
from core.errors import BulkheadError
from core.settings import Settings
from core.stopping import StopFlag
from storage import Database

log = logging.getLogger("bulkhead.serve")

_RESTART_LIMIT = 5
#: Seconds gunicorn keeps an idle client connection open: longer than any Retry-After the API sends.
KEEP_ALIVE_SECONDS = 15
_RESTART_WINDOW = 60.0


def bulkhead_command(*args: str) -> list[str]:
    """Return the argv that runs ``bulkhead`` with ``args`` from this installation."""
    script = Path(sys.executable).with_name("bulkhead")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-c", "from cli.main import main; main(prog_name='bulkhead')", *args]


@dataclass
class Child:
    """An application process that the supervisor restarts when it exits unexpectedly."""

    name: str
    argv: list[str]
    stop_timeout: float
    process: ManagedProcess | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Own the embedded services and child processes of ``bulkhead serve``; stop them all on exit."""

    def __init__(
        self,
        settings: Settings,
        *,
        echo: Callable[[str], None] | None = None,
        commands: frozenset[str] = frozenset({"orchestrator", "worker"}),
    ):
        self.settings = settings
        self.commands = commands  # the ``bulkhead`` sub-commands this installation has
        self.data_dir = settings.data_dir.resolve()
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.s3: EmbeddedS3 | None = None
        self.children: list[Child] = []
        self.placements: list[Placement] = []
        self.environ: dict[str, str] = {}
        self.stopping = StopFlag()
        self._lock: IO[str] | None = None

    def request_stop(self) -> None:
        """Ask the supervisor to stop at its next safe point (safe to call from a signal handler)."""
        self.stopping.set()

    def _checkpoint(self) -> None:
        if self.stopping.is_set():
            raise StopRequested

    # -- start ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the embedded services that are not configured, migrate, then the API and job processes."""
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        check_port_free(self.settings.host, self.settings.port)
        reserve_port(self.settings.port)  # keep the embedded servers off the API's port
        try:
            settings = self.start_services()
            self._checkpoint()
        except subprocess.CalledProcessError as err:
            output = (err.stderr or err.stdout or b"").decode(errors="replace").strip()
            raise ServeError(f"{' '.join(map(str, err.cmd[:2]))} failed: {output}") from err
        except (RuntimeError, OSError, BulkheadError) as err:
            raise ServeError(str(err)) from err
        self._migrate(settings)
        self._checkpoint()
        self.settings = settings
        self.environ = self._child_environ(settings)
        self._write_runtime_file(settings)
        self._start_children(settings)
        self._announce(time.monotonic() - started)

    def _take_lock(self) -> None:
        lock = (self.data_dir / "serve.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ServeError(f"another 'bulkhead serve' is already using {self.data_dir}") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def start_services(self) -> Settings:
        """Start the embedded servers of what is not configured; return the settings that name them all."""
        settings = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Redis and SeaweedFS start in the background while PostgreSQL starts in the foreground.
        if not settings.redis_url:
            self.redis = embedded_redis(self.data_dir)
            self.redis.launch()
        if not settings.s3_endpoint_url:
            self.s3 = EmbeddedS3(
                self.data_dir / "s3", access_key=settings.s3_access_key, secret_key=settings.s3_secret_key
            )
            self.s3.launch()
        if not settings.database_url:
            # Embedded: migrate as the owner, then run every process as the restricted application role.
            self.postgres = embedded_postgres(self.data_dir)
            owner_url = self.postgres.start()
            settings = embedded_database_settings(settings, self.data_dir, owner_url)
            assert settings.database_url is not None
            self._place(
                "PostgreSQL", redact(settings.database_url), f"embedded, data in {self.postgres.data_dir}"
            )
        else:
            self._place("PostgreSQL", redact(settings.database_url), "configured (BULKHEAD_DATABASE_URL)")
        if self.redis is not None:
            settings = replace(settings, redis_url=self.redis.wait_ready())
            self._place("Redis", redact(settings.redis_url or ""), f"embedded, data in {self.redis.data_dir}")
        else:
            self._place("Redis", redact(settings.redis_url or ""), "configured (BULKHEAD_REDIS_URL)")
        if self.s3 is not None:
            endpoint = self.s3.wait_ready()
            settings = replace(
                settings,
                s3_endpoint_url=endpoint.endpoint_url,
                s3_access_key=endpoint.access_key,
                s3_secret_key=endpoint.secret_key,
            )
            self._place(
                "S3",
                f"{endpoint.endpoint_url} bucket {settings.s3_bucket}",
                f"embedded SeaweedFS, data in {self.s3.root}",
            )
        else:
            self._place(
                "S3",
                f"{settings.s3_endpoint_url} bucket {settings.s3_bucket}",
                "configured (BULKHEAD_S3_ENDPOINT_URL)",
            )
        ensure_bucket(settings)
        if not settings.import_secret_key:
            # The key that seals import credentials in the job table: one per data directory, kept.
            settings = replace(settings, import_secret_key=serve_secret(self.data_dir, "import-key"))
        return settings

    def _migrate(self, settings: Settings) -> None:
        url = settings.migration_database_url or settings.database_url
        assert url is not None
        db = Database(url)
        try:
            db.migrate(
                app_role=settings.database_app_role,
                app_password=settings.database_app_password,
                admin_role=settings.database_admin_role,
                admin_password=settings.database_admin_password,
            )
        finally:
            db.dispose()

    def _child_environ(self, settings: Settings) -> dict[str, str]:
        assert settings.database_url and settings.redis_url and settings.s3_endpoint_url
        env = {
            **os.environ,
            "BULKHEAD_DATABASE_URL": settings.database_url,
            "BULKHEAD_REDIS_URL": settings.redis_url,
            "BULKHEAD_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "BULKHEAD_S3_BUCKET": settings.s3_bucket,
            "BULKHEAD_S3_REGION": settings.s3_region,
            "BULKHEAD_S3_PREFIX": settings.s3_prefix,
            "BULKHEAD_DATA_DIR": str(self.data_dir),
            "BULKHEAD_HOST": settings.host,
            "BULKHEAD_PORT": str(settings.port),
        }
        if settings.database_admin_url:
            env["BULKHEAD_DATABASE_ADMIN_URL"] = settings.database_admin_url
        if settings.import_secret_key:
            env["BULKHEAD_IMPORT_SECRET_KEY"] = settings.import_secret_key
        if settings.s3_access_key and settings.s3_secret_key:
            env["BULKHEAD_S3_ACCESS_KEY"] = settings.s3_access_key
            env["BULKHEAD_S3_SECRET_KEY"] = settings.s3_secret_key
        # One directory for every child's Prometheus counters, which /metrics sums (emptied at each start).
        metrics_dir = self.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        return env

    def _write_runtime_file(self, settings: Settings) -> None:
        """Record where everything runs (with the S3 keys: mode 0600) for other local commands."""
        doc = {
            "pid": os.getpid(),
            "api_url": f"http://{settings.host}:{settings.port}",
            **{k: v for k, v in self.environ.items() if k.startswith("BULKHEAD_")},
        }
        write_runtime(self.data_dir, doc)

    def _start_children(self, settings: Settings) -> None:
        gunicorn = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{settings.host}:{settings.port}",
            "--workers",
            str(settings.api_workers),
            "--threads",
            "4",
            "--worker-class",
            "gthread",
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "10",
            "--timeout",
            "120",
            # Longer than any Retry-After the API sends, so that a client polling as told finds its
            # connection still open (gunicorn's default, 2 s, closed it as the client came back).
            "--keep-alive",
            str(KEEP_ALIVE_SECONDS),
            *gunicorn_extras(),
            "api.wsgi:app()",
        ]
        api = Child("api", gunicorn, stop_timeout=15.0)
        self.children.append(api)
        self._spawn(api)
        assert api.process is not None
        try:
            wait_for_port(api.process, settings.port, timeout=60)
            # The job processes start once the API answers, so they do not slow its start on a small machine.
            wait_for_metadata(api.process, settings, timeout=60, stopping=self.stopping)
            self._checkpoint()
        except RuntimeError as err:
            raise ServeError(f"the API did not start: {err}") from None
        self._place(
            "API", f"http://{settings.host}:{settings.port}", f"gunicorn, {settings.api_workers} processes"
        )
        commands = self.commands
        if "orchestrator" in commands:
            orchestrator = Child("orchestrator", bulkhead_command("orchestrator"), stop_timeout=15.0)
            self.children.append(orchestrator)
            self._spawn(orchestrator)
            self._place("orchestrator", "1 process", "plans jobs and releases their work")
        else:
            log.warning("this installation has no 'bulkhead orchestrator' command; bulk jobs will not run")
        if "worker" in commands:
            # Two pools, so that a large job's work (the background lane, at a lower CPU priority) never
            # holds the threads or the interpreter lock that a small job's work needs.
            for lane, name in (("foreground", "worker"), ("background", "background worker")):
                argv = bulkhead_command(
                    "worker",
                    "--processes",
                    str(settings.worker_processes),
                    "--threads",
                    str(settings.worker_threads),
                    "--lane",
                    lane,
                )
                worker = Child(name, argv, stop_timeout=20.0)
                self.children.append(worker)
                self._spawn(worker)
                self._place(
                    f"{name}s",
                    f"{settings.worker_processes} process(es)",
                    f"{settings.worker_threads} threads each, {lane} lane",
                )
        else:
            log.warning("this installation has no 'bulkhead worker' command; bulk jobs will not run")

    def _spawn(self, child: Child) -> None:
        child.process = ManagedProcess(
            child.name, child.argv, env=self.environ, stop_timeout=child.stop_timeout
        )

    def _place(self, name: str, where: str, detail: str) -> None:
        self.placements.append(Placement(name, where, detail))

    def _announce(self, seconds: float) -> None:
        embedded = bool(self.postgres or self.redis or self.s3)
        self.echo(summary(self.placements, self.settings, self.data_dir, seconds, embedded=embedded))

    # -- run -----------------------------------------------------------------------------------------------

    def wait(self) -> None:
        """Keep the children running until a stop is requested, an embedded server dies or a child keeps
        crashing."""
        while not self.stopping.wait(0.5):
            for server, name in ((self.redis, "Redis"), (self.s3, "S3 (SeaweedFS)")):
                if server is not None and server.process is not None and not server.process.running():
                    raise ServeError(f"the embedded {name} server exited:\n{server.process.log_tail()}")
            for child in self.children:
                if child.process is not None and not child.process.running():
                    self._restart(child)

    def _restart(self, child: Child) -> None:
        assert child.process is not None
        code = child.process.popen.returncode
        child.process.stop()
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < _RESTART_WINDOW] + [now]
        if len(child.restarts) > _RESTART_LIMIT:
            raise ServeError(
                f"{child.name} exited {len(child.restarts)} times within {_RESTART_WINDOW:.0f} s"
            )
        log.error("%s exited with code %s; starting it again", child.name, code)
        if not self.stopping.wait(min(2 ** (len(child.restarts) - 1), 10)):
            self._spawn(child)

    # -- stop ----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the children (API first), then the embedded servers; kill what does not stop in time."""
        processes = [c.process for c in self.children if c.process is not None]
        for process in processes:
            process.request_stop()
        for process in processes:
            process.stop()
        self.children.clear()
        servers = [s for s in (self.redis, self.s3) if s is not None and s.process is not None]
        for server in servers:
            assert server.process is not None
            server.process.request_stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self._lock is not None:
            # Only the serve that holds the lock wrote the runtime file: one refused at start-up leaves
            # the running one's file alone.
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / RUNTIME_FILE).unlink()
            self._lock.close()
            self._lock = None
