"""Child processes that never outlive their parent: spawn, wait for a port, stop with a deadline."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


# Ports this process handed out: a port is free until its server binds it, so without this list two servers
# started one after the other could be given the same port.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def reserve_port(port: int) -> None:
    """Never hand out ``port`` from ``free_ports`` in this process (it is, or will be, taken)."""
    with _handed_out_lock:
        _handed_out.add(port)


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that are free now and not handed out before."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _handed_out_lock:
            while len(ports) < count:
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                sockets.append(s)
                port = int(s.getsockname()[1])
                if port not in _handed_out:
                    ports.append(port)
                    _handed_out.add(port)
        return ports
    finally:
        for s in sockets:
            s.close()


def free_port_pair(offset: int) -> tuple[int, int]:
    """Return a free port and ``port + offset``, both free now and neither handed out before."""
    with _handed_out_lock:
        for _ in range(100):
            with socket.socket() as first:
                first.bind(("127.0.0.1", 0))
                port = int(first.getsockname()[1])
                if port + offset > 65535 or {port, port + offset} & _handed_out:
                    continue
                with socket.socket() as second:
                    try:
                        second.bind(("127.0.0.1", port + offset))
                    except OSError:
                        continue
                _handed_out.update((port, port + offset))
                return port, port + offset
    raise RuntimeError(f"no free pair of ports {offset} apart")


def free_port() -> int:
    """Return one TCP port on 127.0.0.1 that is free right now."""
    return free_ports(1)[0]


_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Ask the kernel to send SIGTERM to this (child) process when its parent dies (Linux only)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ManagedProcess:
    """A child in a process group of its own: it stops when asked, is killed after a deadline, and
    receives SIGTERM from the kernel if its parent dies first. ``umask`` (when not -1) is the file mode mask
    it starts with (0o077: whatever it creates, sockets included, only its owner may use)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 15.0,
        kill_log_level: int = logging.WARNING,
        umask: int = -1,
    ):
        self.name = name
        self.argv = list(argv)
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.kill_log_level = kill_log_level
        self._signalled = False
        self._log: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = log_path.open("ab")
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            self.argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,
            umask=umask,
            # Only a prctl call through a function resolved before the fork: safe with threads.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        self.pid = self.popen.pid
        log.debug("started %s (pid %s): %s", name, self.pid, " ".join(self.argv))

    def running(self) -> bool:
        """Tell whether the process is still running."""
        return self.popen.poll() is None

    def request_stop(self) -> None:
        """Send the stop signal once, without waiting (to stop several processes in parallel)."""
        if not self._signalled and self.popen.poll() is None:
            self._signalled = True
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)

    def stop(self, timeout: float | None = None) -> int | None:
        """Signal the process, wait up to ``timeout`` s, then kill its whole group; return the exit code."""
        deadline = self.stop_timeout if timeout is None else timeout
        if self.popen.poll() is None:
            self.request_stop()
            try:
                self.popen.wait(deadline)
            except subprocess.TimeoutExpired:
                log.log(
                    self.kill_log_level,
                    "%s (pid %s) did not stop in %.0f s; killing it",
                    self.name,
                    self.pid,
                    deadline,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        self._reap_group()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode

    def _reap_group(self) -> None:
        """Kill whatever is left in the process group once its leader has exited."""
        end = time.monotonic() + 3.0
        while _group_alive(self.pid) and time.monotonic() < end:
            time.sleep(0.05)
        if _group_alive(self.pid):
            log.warning("%s left processes behind; killing its process group", self.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of the process's log file, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])


def wait_for_port(process: ManagedProcess, port: int, *, timeout: float = 30.0) -> None:
    """Wait until ``process`` accepts connections on 127.0.0.1:``port``; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.running():
            raise RuntimeError(
                f"{process.name} exited with code {process.popen.returncode} before listening on port "
                f"{port}:\n{process.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{process.name} did not listen on port {port} within {timeout:.0f} s:\n"
                    f"{process.log_tail()}"
                ) from None
            time.sleep(0.05)
