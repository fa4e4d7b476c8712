"""Process-level helpers of worker processes."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to kill this process when its parent dies (Linux); return whether it could.

    A Dramatiq worker process whose main process was killed must not run on, unseen, with jobs that the
    sweeper is about to hand to another worker.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_SET_PDEATHSIG, sig)) == 0
