"""The background lane: a large job's processing work runs in a thread at a lower CPU priority.

When the cores are busy, the kernel then gives a small job's threads (the foreground lane) most of the CPU,
whichever partition each belongs to; when nothing else runs, a background thread gets every cycle it asks
for, so a large job alone is not slowed down. Window slots alone cannot do this: one running export keeps
both cores of a small machine busy (its worker thread, its PostgreSQL backend, the S3 server), and a small
job then runs at half speed whether or not it waited for a slot.

On Linux each thread has its own nice value; raising it needs no privilege but lowering it again does, so
the work runs in a fresh thread that ends with the job, and the Dramatiq worker thread keeps its priority.
Elsewhere the work runs in the fresh thread at the usual priority.
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the waiting worker thread wakes, so that Dramatiq's asynchronous exceptions (shutdown, time
#: limit) reach it.
_WAIT_SECONDS = 0.1


def lower_this_thread(nice: int) -> int | None:
    """Raise the calling thread's nice value by ``nice`` (at most 19); return the new value, None if not."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return None
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        target = min(19, current + nice)
        os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:
        log.debug("background lane: nice value not changed (%s)", exc)
        return None
    return target


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` asynchronously in ``thread`` (as Dramatiq does in its worker threads)."""
    if thread.ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def run_in_background(nice: int, work: Callable[[], T]) -> T:
    """Run ``work`` in a new thread whose nice value is raised by ``nice``; return or raise what it does.

    The new thread sees the caller's context variables (the log context with partition and job id). An
    exception raised asynchronously into the waiting thread (Dramatiq's shutdown or time limit) is passed on
    to the work, which is waited for before the exception goes up.
    """
    context = contextvars.copy_context()
    outcome: dict[str, object] = {}

    done = threading.Event()

    def target() -> None:
        try:
            lower_this_thread(nice)
            outcome["result"] = context.run(work)
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome["error"] = exc
        finally:
            done.set()

    name = f"{threading.current_thread().name}-background"
    thread = threading.Thread(target=target, name=name, daemon=True)
    # Waiting on an Event, not on Thread.join: an exception raised into join() makes the thread look
    # stopped while it still runs (threading's bpo-45274 handling), and the work would be left behind.
    try:
        thread.start()
        while not done.wait(_WAIT_SECONDS):
            pass
    except BaseException as exc:
        if thread.ident is not None and not done.is_set():
            _raise_in(thread, type(exc))
            while not done.wait(_WAIT_SECONDS):
                pass
        raise
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    return outcome["result"]  # type: ignore[return-value]


__all__ = ["lower_this_thread", "run_in_background"]
