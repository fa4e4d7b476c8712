"""Child processes of the embedded servers and of ``bulkhead serve``: nothing outlives its parent."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from cli.embedded import ManagedProcess, free_port_pair, free_ports, reserve_port
from cli.embedded.seaweedfs import claim_socket_paths


def _wait_for_line(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip().splitlines()[0]
        time.sleep(0.05)
    raise AssertionError(f"nothing written to {path}")


def test_a_child_that_ignores_sigterm_is_killed_with_its_own_children_after_the_deadline(
    tmp_path: Path,
) -> None:
    # Given a child that ignores SIGTERM and has a child of its own
    script = textwrap.dedent(
        """
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(["sleep", "600"])
        print(grandchild.pid, flush=True)
        time.sleep(600)
        """
    )
    log = tmp_path / "child.log"
    child = ManagedProcess("stubborn", [sys.executable, "-c", script], log_path=log, stop_timeout=1.0)
    grandchild = psutil.Process(int(_wait_for_line(log)))
    # When it is stopped
    started = time.monotonic()
    child.stop()
    elapsed = time.monotonic() - started
    # Then it and its child are gone, killed once the deadline passed
    assert not child.running()
    assert child.popen.returncode == -signal.SIGKILL
    grandchild.wait(timeout=5)
    assert not grandchild.is_running()
    assert 1.0 <= elapsed < 10


def test_a_child_gets_sigterm_when_its_parent_dies_without_stopping_it(tmp_path: Path) -> None:
    # Given a parent process that started a managed child and then is killed outright
    out = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import time
        from cli.embedded import ManagedProcess
        child = ManagedProcess("sleeper", ["sleep", "600"])
        open({str(out)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        sleeper = psutil.Process(int(_wait_for_line(out)))
        # When the parent is killed with SIGKILL
        parent.kill()
        parent.wait(timeout=10)
        # Then the kernel sends its child SIGTERM and it exits
        sleeper.wait(timeout=10)
        assert not sleeper.is_running()
    finally:
        parent.kill()
        parent.wait()


def test_free_ports_are_never_handed_out_twice_or_when_reserved() -> None:
    # Given a reserved port and ports already handed out
    first = free_ports(20)
    reserve_port(first[0] + 1)
    # When more ports are asked for
    second = free_ports(50)
    # Then none repeats an earlier one or the reserved one
    assert len(set(first + second)) == 70
    assert first[0] + 1 not in second


def test_a_port_pair_is_never_a_port_handed_out_before_nor_handed_out_again() -> None:
    # Given ports already handed out (as to a Redis about to start)
    earlier = set(free_ports(30))
    # When pairs of ports 10000 apart are asked for (as for the SeaweedFS admin server and its gRPC port)
    pairs = [free_port_pair(10_000) for _ in range(20)]
    # Then no port of a pair was handed out before, every pair is 10000 apart, and later ports avoid them
    paired = {p for pair in pairs for p in pair}
    assert all(b - a == 10_000 for a, b in pairs)
    assert not paired & earlier and len(paired) == 40
    assert not set(free_ports(30)) & paired


def test_serve_takes_every_stop_signal_even_when_signals_arrive_in_a_burst(tmp_path: Path) -> None:
    # Given a process wired like `bulkhead serve` (a handler calling request_stop, a main loop waiting on the
    # supervisor's stop flag) that receives a signal about every millisecond for two seconds
    script = textwrap.dedent(
        """
        import os, signal, subprocess, sys, time
        from core.settings import Settings
        from cli.serve.supervisor import Supervisor
        supervisor = Supervisor(Settings())
        handled = 0
        def stop(signum, frame):
            global handled
            handled += 1
            supervisor.request_stop()
        signal.signal(signal.SIGUSR1, stop)
        burst = (
            "import os, signal, time\\n"
            f"for _ in range(2000):\\n    os.kill({os.getpid()}, signal.SIGUSR1)\\n    time.sleep(0.001)\\n"
        )
        sender = subprocess.Popen([sys.executable, "-c", burst])
        waits = 0
        while sender.poll() is None:
            supervisor.stopping = type(supervisor.stopping)()
            while not supervisor.stopping.wait(0.0002) and sender.poll() is None:
                waits += 1
        print("handled", handled, "waits", waits, flush=True)
        """
    )
    # When it runs
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    except subprocess.TimeoutExpired as exc:
        # (the process is killed by subprocess.run)
        raise AssertionError("a stop signal's handler waited for a lock forever") from exc
    # Then every signal was handled and the process ended by itself
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("handled ")


def test_seaweedfs_ports_whose_fixed_socket_path_another_user_holds_are_not_used() -> None:
    # Given ports, and a file at the fixed /tmp path of one of their gRPC sockets
    ports = dict(zip(("master.port", "master.port.grpc"), free_ports(2), strict=True))
    squatted = Path(f"/tmp/seaweedfs-master-grpc-{ports['master.port.grpc']}.sock")
    squatted.write_text("")
    try:
        owner = squatted.stat().st_uid
        # When the file belongs to another user / Then the ports are refused and the file is left alone
        assert claim_socket_paths(ports, uid=owner + 1) is False
        assert squatted.exists()
        # When it is a leftover of our own / Then it is removed and the ports may be used
        assert claim_socket_paths(ports, uid=owner) is True
        assert not squatted.exists()
    finally:
        squatted.unlink(missing_ok=True)
