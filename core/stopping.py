"""A stop request that signal handlers may set."""

from __future__ import annotations

import time


class StopFlag:
    """A stop request that a signal handler may set: it takes no lock.

    ``threading.Event.set`` takes the event's lock; a handler that runs while the main thread holds it (inside
    ``Event.wait``), or that interrupts another handler's ``set``, waits for itself forever: ``serve`` then
    ignores every later Ctrl-C or SIGTERM. Waiting here is sleeping in short steps, which a signal interrupts.
    """

    _STEP = 0.05

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Record the request (one attribute store: safe in a signal handler, at any point)."""
        self._set = True

    def is_set(self) -> bool:
        """Return whether a stop was requested."""
        return self._set

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the request; return whether it came."""
        deadline = time.monotonic() + timeout
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, self._STEP))
        return True
